"""Array writers: NPY (one output), NPZ and JSON (every output), kept whole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.data.batch import OutputValue
from modelforge.errors import OutputError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np


from modelforge.data.writers.base import Writer, _Sink, _text


class ArrayWriter(Writer):
    """NPY (one output), NPZ (every output, ZipMap keys, kept columns) and JSON (one
    object: output name -> nested lists); per-row batches are joined at the end."""

    whole_ok = True

    def __init__(self, sink: _Sink, fmt: str) -> None:
        super().__init__(sink)
        self.fmt = fmt
        self.parts: dict[str, list[Any]] = {}
        self.keys: dict[str, list[Any]] = {}
        self.whole_values: dict[str, Any] | None = None

    def _check_npy(self, outputs: list[OutputValue], keep: dict[str, Any]) -> None:
        if self.fmt == "npy" and (len(outputs) != 1 or keep or outputs[0].kind != "tensor"):
            names = ", ".join(safe(o.name) for o in outputs)
            if len(outputs) != 1:
                what = f"{len(outputs)} outputs ({names})"
            elif outputs[0].kind != "tensor":
                what = f"output {names}, which is not a tensor ({outputs[0].shape_text()})"
            else:
                what = f"output {names}"
            raise OutputError(
                f"NPY output holds one array but this run has {what}"
                + (" and --keep columns" if keep else ""),
                hint="select one tensor output with --outputs and drop --keep, or write .npz",
                code="npy_one_output",
            )

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        import numpy as np

        self._check_npy(outputs, keep)
        for name, values in keep.items():
            if self.fmt == "json" and hasattr(values, "to_list"):
                # as JSON Lines writes them: null stays null, dates become ISO text
                self.parts.setdefault(name, []).append(_json_values(values))
                continue
            arr = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
            if arr.dtype == object and any(v is None for v in arr.reshape(-1)):
                raise OutputError(
                    f"--keep column '{safe(name)}' has missing values, which NPZ cannot hold "
                    "for text (numpy has no missing string)",
                    hint="fill them, or write Parquet, JSON Lines or JSON (which keep nulls)",
                    code="column_not_writable",
                )
            self.parts.setdefault(name, []).append(_text(arr))
        for o in outputs:
            self.parts.setdefault(o.name, []).append(_text(o.array))
            if o.keys is not None:
                self.keys[o.name] = o.keys

    def _whole(self, outputs: list[OutputValue]) -> None:
        self._check_npy(outputs, {})
        self.whole_values = {}
        for o in outputs:
            self.whole_values[o.name] = o
            if o.keys is not None:
                self.keys[o.name] = o.keys

    def _arrays(self) -> dict[str, Any]:
        from itertools import chain

        import numpy as np

        if self.whole_values is None:
            return {
                k: np.concatenate(v) if isinstance(v[0], np.ndarray) else list(chain(*v))
                for k, v in self.parts.items()
            }
        return {k: o.value for k, o in self.whole_values.items()}

    def _finish(self) -> None:
        import numpy as np

        values = self._arrays()
        if self.fmt == "npy":
            np.save(self.sink.fh, _text(next(iter(values.values()))), allow_pickle=False)
            return
        if self.fmt == "json":
            doc = {k: _jsonable(v) for k, v in values.items()}
            doc.update({f"{k}_keys": _jsonable(v) for k, v in self.keys.items()})
            import json

            self.sink.fh.write(json.dumps(doc, allow_nan=False).encode() + b"\n")
            return
        arrays: dict[str, np.ndarray] = {}
        for name, value in values.items():
            arrays.update(_npz_members(name, value))
        for name, keys in self.keys.items():
            arrays[f"{name}_keys"] = np.asarray(keys)
        np.savez(self.sink.fh, allow_pickle=False, **arrays)  # type: ignore[arg-type]


def _npz_members(name: str, value: Any) -> dict[str, Any]:
    """One output as NPZ members (naming in the module doc)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return {name: _text(value)}
    if isinstance(value, list):
        return {f"{name}_{i}": _text(np.asarray(v)) for i, v in enumerate(value)}
    if isinstance(value, dict):
        return {
            f"{name}_keys": np.asarray(list(value)),
            f"{name}_values": np.asarray(list(value.values())),
        }
    return {}  # an empty optional output has nothing to write


def _json_values(series: Any) -> list[Any]:
    """A kept polars column as JSON values, the way the JSON Lines writer writes them."""
    import json

    import polars as pl

    text = pl.DataFrame([series.rename("v")]).write_ndjson()
    return [json.loads(line)["v"] for line in text.splitlines() if line]


def _jsonable(value: Any) -> Any:
    """Nested lists; NaN/inf become null (JSON has no such numbers)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            obj = value.astype(object)
            obj[~np.isfinite(value)] = None
            return obj.tolist()
        return _text(value).tolist()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.generic,)):
        return value.item()
    return value
