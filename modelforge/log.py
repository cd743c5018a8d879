"""Library-side messages. Core code never prints: it logs to the ``modelforge`` logger.

The CLI attaches a handler that routes warnings to stderr (and into the JSON envelope);
library users see them through the standard :mod:`logging` machinery.
"""

from __future__ import annotations

import logging

_logger = logging.getLogger("modelforge")


def warn(message: str) -> None:
    _logger.warning(message)


def info(message: str) -> None:
    _logger.info(message)


def debug(message: str) -> None:
    _logger.debug(message)
