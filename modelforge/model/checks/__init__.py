"""The individual checks behind ``modelforge validate`` (see :mod:`modelforge.model.validate`)."""
