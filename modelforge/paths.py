"""All filesystem locations ModelForge uses, resolved in one place.

Store root precedence: explicit ``--store PATH`` > ``MODELFORGE_HOME`` > the platformdirs
user data directory. No other module calls platformdirs or ``Path.home()``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "MODELFORGE_HOME"
APP_NAME = "modelforge"

_override: Path | None = None


def set_store_override(path: str | os.PathLike[str] | None) -> None:
    """Set (or clear) the store root chosen on the command line (``--store``)."""
    global _override
    _override = Path(path).expanduser() if path is not None else None


def store_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the store root: explicit argument > --store > $MODELFORGE_HOME > user data dir."""
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    if _override is not None:
        return _override.absolute()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)).absolute()


def cache_dir() -> Path:
    """Directory for derived, re-creatable data (e.g. onnxruntime capability probes)."""
    env = os.environ.get("MODELFORGE_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)).absolute()
