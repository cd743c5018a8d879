"""The one bridge between the server and the core: open a model version -> sessions + schema.

Everything the server needs from ModelForge's core goes through here, so that a change in
how models are opened (e.g. ``modelforge.model.open.open_model``) is a change in one place:

* :func:`modelforge.store.open.open_location` (over :func:`modelforge.model.open.open_model`)
  reads the file with the size cap, checks store versions against their recorded sha256,
  parses it, refuses external data outside the model folder and extracts the schema;
* :func:`modelforge.engine.session.session_options` / ``translate_error`` build sessions
  (plus ``session.intra_op.allow_spinning=0``: a spinning pool burns a core per instance);
* :func:`modelforge.engine.runner.to_output` flattens ZipMap outputs the way predict does;
* :func:`modelforge.model.synth.synthesize_inputs` gives warm-up inputs.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.errors import InvalidModelError
from modelforge.serve.protocol import oip_datatype
from modelforge.text import escape

if TYPE_CHECKING:
    import numpy as np

    from modelforge.engine.session import SessionConfig
    from modelforge.model.schema import ModelSchema, TensorSpec
    from modelforge.store.resolve import ModelLocation


@dataclass(frozen=True)
class Port:
    """One input or output as the protocol shows it."""

    name: str
    datatype: str  # OIP datatype; ZipMap outputs are FP32
    shape: list[int]  # -1 for symbolic/unknown dims
    onnx_type: str
    numpy: str | None  # numpy dtype name; None for BYTES/BF16
    zipmap: bool = False  # seq(map(K, tensor(float))) flattened to [N, K] + labels
    dims_declared: bool = True  # False: the model declares no rank (shape shows [-1])
    symbols: tuple[str | None, ...] = ()  # symbolic dim names, per axis (None: fixed/unnamed)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def _shown(port: Port) -> str:
    symbols = [*port.symbols, *[None] * (len(port.shape) - len(port.symbols))]
    dims = [s or ("?" if d < 0 else str(d)) for d, s in zip(port.shape, symbols, strict=False)]
    return f"'{escape(port.name)}' [{', '.join(dims)}]" if dims else f"'{escape(port.name)}'"


def batch_dim_missing(inputs: list[Port], outputs: list[Port]) -> str | None:
    """Why this model has no batch dimension to merge requests on (None: every input and
    output has a variable first dimension; ZipMap outputs are one row per input row)."""
    for port in inputs:
        if not port.shape or port.shape[0] >= 0:
            return f"input {_shown(port)} has no variable first (batch) dimension"
    for port in outputs:
        if not port.zipmap and (not port.shape or port.shape[0] >= 0):
            return f"output {_shown(port)} has no variable first (batch) dimension"
    return None


_ANONYMOUS = re.compile(r"unk__\d+")


def _named(symbol: str | None) -> bool:
    """A dim name that means something: tf2onnx (and onnx's shape inference) give every
    unknown dim its own ``unk__N``, so two of those say nothing about being different."""
    return bool(symbol) and not _ANONYMOUS.fullmatch(symbol or "")


def batch_dims_disagree(inputs: list[Port], outputs: list[Port]) -> str | None:
    """Why the variable first dimensions are not one batch dimension: ``x [batch, 4]`` next
    to ``table [k, 4]`` are two (merging requests would concatenate the tables too, and
    each answer would get the others' columns), and so is an output whose first dimension
    is a named non-batch dimension of an input. An output may name its first dimension
    differently from the inputs (exporters do: ``Divpooled_dim_0``); the batcher still
    checks its rows at run time. tf2onnx's ``unk__N`` names count as unnamed. Inputs named
    differently by mistake (``batch`` and ``batch_size``) are taken at their word: served
    unbatched, with this reason."""
    named = [p for p in inputs if p.symbols and _named(p.symbols[0])]
    firsts = {p.symbols[0] for p in named}
    if len(firsts) > 1:
        a = named[0]
        b = next(p for p in named if p.symbols[0] != a.symbols[0])
        return (
            f"inputs {_shown(a)} and {_shown(b)} do not share their first dimension "
            f"('{escape(a.symbols[0] or '')}' and '{escape(b.symbols[0] or '')}')"
        )
    inner = {s for p in inputs for s in p.symbols[1:] if _named(s)} - firsts
    for port in outputs:
        first = port.symbols[0] if port.symbols else None
        if first in inner:
            return (
                f"output {_shown(port)} has input dimension '{escape(first or '')}' first, "
                "not the batch dimension"
            )
    return None


def batch_problem(inputs: list[Port], outputs: list[Port]) -> str | None:
    """Why requests of this model can never be merged along dimension 0, from the declared
    shapes alone (None: they may be, subject to the row-independence probe)."""
    return batch_dim_missing(inputs, outputs) or batch_dims_disagree(inputs, outputs)


def _dims(spec: TensorSpec) -> list[int]:
    if spec.shape is None:
        return [-1]
    return [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]


def _port(spec: TensorSpec, output: bool) -> Port:
    dt = oip_datatype(spec.type)
    if dt is not None:
        symbols = tuple(d if isinstance(d, str) else None for d in (spec.shape or []))
        return Port(
            spec.name,
            dt,
            _dims(spec),
            spec.type,
            spec.dtype if dt not in ("BYTES", "BF16") else None,
            dims_declared=spec.shape is not None,
            symbols=symbols,
        )
    if output and spec.type.startswith("seq(map(") and "tensor(float)" in spec.type:
        return Port(spec.name, "FP32", [-1, -1], spec.type, "float32", zipmap=True)
    what = "output" if output else "input"
    raise InvalidModelError(
        f"{what} '{escape(spec.name)}' has type {escape(spec.type)}, which the Open "
        "Inference Protocol cannot carry",
        hint="serve a model whose inputs and outputs are tensors (sklearn ZipMap "
        "probabilities are flattened automatically)",
        code="unservable_type",
    )


@dataclass
class OpenedVersion:
    """A model version ready to serve: its sessions, schema and protocol ports."""

    path: Path
    sha256: str
    schema: ModelSchema
    inputs: list[Port]
    outputs: list[Port]
    sessions: list[Any]  # onnxruntime.InferenceSession, one per instance
    threads: int
    labels: dict[str, list[Any]] = field(default_factory=dict)  # ZipMap keys, once seen

    def flatten(self, port: Port, value: Any) -> tuple[np.ndarray, list[Any] | None]:
        """:func:`flatten_output`, plus: a ZipMap output of 0 rows (an empty list, so no
        keys) comes back as [0, K] with the labels an earlier run (warm-up) showed."""
        array, labels = flatten_output(port, value)
        if port.zipmap:
            if labels:
                self.labels.setdefault(port.name, labels)
            elif array.shape[0] == 0 and port.name in self.labels:
                import numpy as np

                known = self.labels[port.name]
                return np.zeros((0, len(known)), dtype=np.float32), list(known)
        return array, labels

    def run(self, index: int, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        """Run instance ``index``; onnxruntime releases the GIL. Errors are translated by the
        caller (it knows which requests were in the batch)."""
        if self.bf16:
            return run_bf16(self.sessions[index], self.inputs, outputs, feeds)
        return list(self.sessions[index].run(outputs, feeds))

    @functools.cached_property
    def bf16(self) -> bool:
        """Whether a run needs the BF16 path (decided once: ``run`` is the hot path)."""
        return any(p.datatype == "BF16" for p in (*self.inputs, *self.outputs))


def run_bf16(
    session: Any, inputs: list[Port], outputs: list[str], feeds: dict[str, np.ndarray]
) -> list[Any]:
    """A run of a model with BF16 inputs or outputs. numpy has no bfloat16, and
    onnxruntime's ``run`` converts neither way, so BF16 tensors travel as their uint16 bit
    patterns: wrapped as bfloat16 OrtValues on the way in, copied out of the OrtValue's
    buffer on the way out."""
    import numpy as np
    import onnxruntime as ort

    bf16 = {p.name for p in inputs if p.datatype == "BF16"}
    values = {
        name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(arr), 16)
        if name in bf16
        else ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
        for name, arr in feeds.items()
    }
    results = session.run_with_ort_values(outputs, values)
    return [_bf16_bits(v) if v.data_type() == "tensor(bfloat16)" else v.numpy() for v in results]


def _bf16_bits(value: Any) -> np.ndarray:
    """The uint16 bit patterns of a CPU bfloat16 OrtValue (a copy: the value is freed)."""
    import ctypes
    import math

    import numpy as np

    shape = list(value.shape())
    n = math.prod(shape)
    raw = ctypes.string_at(value.data_ptr(), 2 * n) if n else b""
    return np.frombuffer(raw, dtype="<u2").reshape(shape)


def flatten_output(port: Port, value: Any) -> tuple[np.ndarray, list[Any] | None]:
    """onnxruntime's value -> (array, labels): ZipMap lists of dicts -> [N, K] + keys."""
    from modelforge.engine.runner import to_output

    out = to_output(port.name, value, zipmap=port.zipmap)
    return out.array, (list(out.keys) if out.keys is not None else None)


SMALL_RUN_S = 0.001  # a full batch faster than this on one thread: one intra-op thread
PROBE_MAX_BYTES = 64 * 1024 * 1024  # bigger models are not probed (two session builds)
PROBE_MAX_FEED_BYTES = 16 * 1024 * 1024  # the probe's full batch: at most this much input


def open_version(
    location: ModelLocation,
    *,
    instances: int,
    threads: int,
    session_config: SessionConfig | None = None,
    probe_rows: int = 0,
) -> OpenedVersion:
    """Open a resolved location through the core's one opener (size cap, external data kept
    inside the model folder, store versions checked against their recorded sha256), then
    create ``instances`` sessions of ``threads`` intra-op threads — or of one thread when
    ``probe_rows`` is set and a run of that many synthesized rows takes under SMALL_RUN_S on
    one thread (see :func:`_small_model_session`)."""
    from modelforge.store.open import open_location

    opened = open_location(location, parse=True)
    schema = opened.ensure_schema()
    opened.proto = None  # the protobuf is not needed once the schema is known
    inputs = [_port(s, output=False) for s in schema.inputs]
    outputs = [_port(s, output=True) for s in schema.outputs]
    source: Any = os.fspath(opened.path) if opened.external else opened.data
    sessions: list[Any] = []
    if probe_rows and threads > 1 and not opened.external and len(source) <= PROBE_MAX_BYTES:
        first = _small_model_session(source, schema, inputs, session_config, probe_rows)
        if first is not None:
            sessions, threads = [first], 1
    sessions += [
        _session(source, threads, session_config) for _ in range(instances - len(sessions))
    ]
    return OpenedVersion(opened.path, opened.sha256, schema, inputs, outputs, sessions, threads)


def _small_model_session(
    source: Any, schema: ModelSchema, inputs: list[Port], cfg: SessionConfig | None, rows: int
) -> Any:
    """A one-thread session, if this model runs ``rows`` rows in under SMALL_RUN_S on it.

    The intra-op threads of a served session sleep between runs (spinning would burn the
    cores between requests), so every run of a multi-threaded session wakes them, which
    costs more than it saves on short runs. Measured on 2 cores, the 20->256->256->1 MLP:
    64 rows 58 us wall / 60 us CPU on one thread against 86 / 122 us on two, 256 rows
    220 / 220 us against 230 / 357 us; two threads win from ~500 rows (0.35 ms) and reach
    1.6x at 4,096 rows (3.7 ms). Only CPU sessions are probed. None: keep the threads asked.
    """
    import time

    if cfg is not None and any(
        p.lower() not in ("cpu", "cpuexecutionprovider") for p in cfg.providers or ()
    ):
        return None
    try:
        one = synthesize_feeds(schema, batch=1, seed=3)
    except Exception:  # inputs that cannot be synthesized: no probe
        return None
    session = _session(source, 1, cfg)
    bf16 = any(p.datatype == "BF16" for p in inputs) or any(
        o.type == "tensor(bfloat16)" for o in schema.outputs
    )

    def best_of(feeds: dict[str, Any], runs: int) -> float:
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            if bf16:
                run_bf16(session, inputs, [], feeds)
            else:
                session.run(None, feeds)
            took = time.perf_counter() - t0
            best = min(best, took)
            if took >= 10 * SMALL_RUN_S:
                break  # clearly not small: stop (a big model's full batch may take seconds)
        return best

    try:  # one row first (twice: the first run allocates), the full batch only if that is fast
        if best_of(one, 2) >= SMALL_RUN_S:
            return None
        row_bytes = max(1, sum(int(getattr(a, "nbytes", 0)) for a in one.values()))
        rows = max(1, min(rows, PROBE_MAX_FEED_BYTES // row_bytes))  # big rows: fewer of them
        small = best_of(synthesize_feeds(schema, batch=rows, seed=3), 3) < SMALL_RUN_S
    except Exception:  # a model that fails on synthesized rows: the warm-up will say so
        return None
    return session if small else None


def _session(source: Any, threads: int, cfg: SessionConfig | None) -> Any:
    import dataclasses

    import onnxruntime as ort

    from modelforge.engine.providers import check_provider_options, plan_providers
    from modelforge.engine.session import (
        SessionConfig,
        quiet_onnxruntime,
        session_options,
        translate_error,
        unknown_option_error,
    )

    cfg = dataclasses.replace(cfg or SessionConfig(), threads=threads)
    quiet_onnxruntime()
    plan = plan_providers(cfg.providers, options=cfg.provider_options, fallback=cfg.fallback)
    so = session_options(cfg)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            source, sess_options=so, providers=plan.providers, provider_options=plan.options
        )
    except Exception as exc:  # onnxruntime raises pybind exception types
        refused = unknown_option_error(str(exc), plan)
        raise (refused or translate_error(exc, "creating the onnxruntime session")) from None
    check_provider_options(session.get_provider_options(), plan)  # keys onnxruntime ignored
    return session


def warmup_feeds(schema: ModelSchema) -> dict[str, np.ndarray] | None:
    """Synthesized one-row inputs for warm-up; None when the inputs cannot be synthesized."""
    from modelforge.errors import ModelForgeError

    try:
        return synthesize_feeds(schema, batch=1)
    except ModelForgeError:
        return None


def synthesize_feeds(schema: ModelSchema, *, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The core's synthesized inputs, with BF16 inputs (no numpy dtype) made as float32 and
    passed as their bfloat16 bit patterns, the way the codec hands them to :meth:`run`."""
    import dataclasses

    from modelforge.model.synth import synthesize_inputs

    bf16 = {s.name for s in schema.inputs if s.type == "tensor(bfloat16)"}
    if bf16:
        inputs = [
            dataclasses.replace(s, type="tensor(float)", dtype="float32") if s.name in bf16 else s
            for s in schema.inputs
        ]
        schema = dataclasses.replace(schema, inputs=inputs)
    feeds = synthesize_inputs(schema, batch=batch, seed=seed)
    for name in bf16:
        bits = feeds[name].astype("<f4").view("<u4") >> 16
        feeds[name] = bits.astype("<u2")
    return feeds


def translate_run_error(exc: BaseException, doing: str) -> Exception:
    from modelforge.engine.session import translate_error

    return translate_error(exc, doing)


def store_versions(store: Any, name: str) -> tuple[list[int], dict[str, int]]:
    """(versions, aliases) of a store name, read fresh (cheap: directory listing + JSON)."""
    return store.versions(name), store.aliases(name)


def store_names(store: Any) -> list[str]:
    return [n for n in store.names() if store.versions(n)]


def file_location(path: str | os.PathLike[str]) -> ModelLocation:
    """A plain .onnx path as a location (not store-owned: no hard-linked external data)."""
    from modelforge.store.resolve import ModelLocation

    return ModelLocation(path=Path(path).absolute(), ref=os.fspath(path), origin="file")


def store_location(store: Any, name: str, version: int) -> ModelLocation:
    """The location of a stored version, through the one resolver."""
    from modelforge.store.resolve import resolve_model

    return resolve_model(f"{name}:{version}", store)


def open_store(root: str | os.PathLike[str] | None) -> Any:
    from modelforge.store.layout import Store

    return Store(root)


def resolve(ref: str, store: Any) -> Any:
    """A MODEL argument -> ModelLocation (path or store reference), via the one resolver."""
    from modelforge.store.resolve import resolve_model

    return resolve_model(ref, store)
