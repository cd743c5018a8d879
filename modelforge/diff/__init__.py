"""``models diff``: structure and behaviour of two models compared (core.py), with the
row-wise output comparison shared with validate's ``examples`` check (compare.py)."""
