"""Opening what a user's MODEL argument names: resolve the reference, then open the file.

This is the edge where store references become files (``model/`` never imports the
store). For a store version the bytes read are checked against the sha256 recorded in
``meta.json`` (and every other recorded file must exist with its recorded size, and
match its hash; a large external-data file is hashed once per file state, see
:mod:`modelforge.store.verified`), so a corrupt or damaged stored model is refused
instead of being used silently; every such error points at
``modelforge models verify NAME:VERSION``.
"""

from __future__ import annotations

import os
from typing import Any

from modelforge.errors import InvalidModelError, NotFoundError, StoreCorruptError
from modelforge.model.open import OpenedModel, open_model
from modelforge.store.layout import Store, hash_file
from modelforge.store.resolve import ModelLocation, resolve_model
from modelforge.text import escape


def _verify_hint(loc: ModelLocation) -> str:
    return (
        f"run 'modelforge models verify {loc.display}' to see every damaged file; restore "
        f"the store from a backup or re-add the model (modelforge models rm {loc.display})"
    )


def _recorded(loc: ModelLocation) -> list[dict[str, Any]]:
    files = (loc.metadata or {}).get("files") or []
    return [f for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)]


def _check_side_files(loc: ModelLocation, model_file: str) -> None:
    """Every recorded file other than the .onnx: present, recorded size, recorded hash
    (hashed once per file state, see :mod:`modelforge.store.verified`)."""
    from modelforge.store import verified

    files_dir = loc.path.parent
    hashed: list[str] = []
    for f in _recorded(loc):
        if f["path"] == model_file:
            continue
        path = files_dir / f["path"]
        try:
            st = path.stat()
        except OSError:
            raise StoreCorruptError(
                f"stored file '{escape(f['path'])}' of {loc.display} is missing ('{escape(path)}')",
                hint=_verify_hint(loc),
                code="stored_file_missing",
            ) from None
        if "size" in f and st.st_size != f["size"]:
            raise StoreCorruptError(
                f"stored file '{escape(f['path'])}' of {loc.display} is {st.st_size} bytes, "
                f"recorded {f['size']}; it is corrupt",
                hint=_verify_hint(loc),
                code="sha256_mismatch",
            )
        key = verified.file_key(path, st, str(f.get("sha256")))
        if verified.is_verified(key):
            continue
        digest, _ = hash_file(path)
        if digest != f.get("sha256"):
            raise StoreCorruptError(
                f"stored file '{escape(f['path'])}' of {loc.display} does not match its "
                "recorded sha256; it is corrupt",
                hint=_verify_hint(loc),
                code="sha256_mismatch",
            )
        hashed.append(key)
    verified.remember(hashed)


def open_location(
    loc: ModelLocation, *, parse: bool = False, auto_parse: bool = True
) -> OpenedModel:
    """Open a resolved location; store versions are checked against their recorded hashes.
    ``parse`` / ``auto_parse``: as for :func:`modelforge.model.open.open_model`."""
    if loc.origin != "store":
        return open_model(loc.path, parse=parse, auto_parse=auto_parse)
    meta = loc.metadata or {}
    model_file = str(meta.get("model_file", loc.path.name))
    expected = next((f.get("sha256") for f in _recorded(loc) if f["path"] == model_file), None)
    if not os.path.lexists(loc.path):
        raise StoreCorruptError(
            f"the model file of {loc.display} is missing from the store ('{escape(loc.path)}')",
            hint=_verify_hint(loc),
            code="stored_file_missing",
        )
    _check_side_files(loc, model_file)
    try:
        return open_model(
            loc.path,
            trusted=True,
            expected_sha256=str(expected) if expected else None,
            parse=parse,
            auto_parse=auto_parse,
            what=f"stored model file of {loc.display}",
        )
    except NotFoundError as err:
        raise StoreCorruptError(
            f"the model file of {loc.display} is missing from the store ('{escape(loc.path)}')",
            hint=_verify_hint(loc),
            code="stored_file_missing",
        ) from err
    except InvalidModelError as err:
        if err.code == "sha256_mismatch":
            raise StoreCorruptError(
                f"the model file of {loc.display} ('{escape(loc.path)}') does not match the "
                "sha256 recorded when it was added; it is corrupt",
                hint=_verify_hint(loc),
                code="sha256_mismatch",
                details=err.details,
            ) from err
        raise type(err)(
            f"{loc.display}: {err.message}",
            hint=(err.hint + "; " if err.hint else "")
            + f"check the stored files with 'modelforge models verify {loc.display}'",
            code=err.code,
            details=err.details,
        ) from err


def open_stored(
    ref: str | os.PathLike[str] | ModelLocation,
    *,
    parse: bool = False,
    auto_parse: bool = True,
    store: Store | None = None,
) -> tuple[ModelLocation, OpenedModel]:
    """Resolve ``ref`` (a path, ``name``, ``name:3``, ``name:prod`` or a ModelLocation) and
    open it with :func:`modelforge.model.open.open_model`.

    Store versions are trusted (their external data may be hard links to the store's
    blobs) and their bytes must match the recorded sha256 (``StoreCorruptError``, code
    ``sha256_mismatch``, exit 6); a missing stored file is ``stored_file_missing``.
    """
    loc = ref if isinstance(ref, ModelLocation) else resolve_model(ref, store)
    return loc, open_location(loc, parse=parse, auto_parse=auto_parse)
