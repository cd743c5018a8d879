"""Which models, versions and aliases are served; loading, warm-up, live aliases, draining.

* A store name serves every version of that name: ``latest`` and the alias targets are
  loaded (and warmed) before the server is ready, other versions on first use.
* ``NAME:3`` / ``NAME:prod`` pins the name to that one version; a path is served under its
  file stem (or ``--name``) as version 1.
* Without MODEL arguments, every name in the store is served, and names added later appear.
* Aliases are live pointers: a poller re-reads the store every ``poll_interval_s``; a moved
  alias is switched only after its new target is loaded and warmed, so no request fails.
  Versions removed from the store stop taking requests and are unloaded once drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from modelforge.errors import ModelForgeError
from modelforge.serve import models as core
from modelforge.serve.batcher import Batcher, Load
from modelforge.serve.options import ServeOptions
from modelforge.serve.protocol import HttpError, clip, not_found, unavailable
from modelforge.serve.stats import Metrics, VersionStats

log = logging.getLogger("modelforge.serve")


@dataclass
class ServedVersion:
    name: str
    version: int
    opened: core.OpenedVersion
    batcher: Batcher
    stats: VersionStats
    batching: bool
    stamp: tuple[int, int] | None = None  # meta.json's (inode, mtime) when it was loaded

    @property
    def label(self) -> str:
        return f"model '{self.name}' version {self.version}"


@dataclass
class ServedModel:
    name: str
    origin: str  # "store" or "file"
    path: Any = None  # for files
    pinned: int | None = None  # store: serve only this version
    pin_alias: str | None = None  # the alias it was pinned by (NAME:prod): serves the pin
    available: list[int] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)
    loaded: dict[int, ServedVersion] = field(default_factory=dict)
    unloaded: bool = False  # evicted through the repository API
    broken: set[int] = field(default_factory=set)  # versions that failed to load while polled
    reasons: dict[int, str] = field(default_factory=dict)  # why a version failed to load
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    unloads: int = 0  # how many times it was unloaded: a load that straddles one is dropped

    def pin(self, versions: list[int], aliases: dict[str, int]) -> tuple[list[int], dict[str, int]]:
        """The store's versions and aliases as this name serves them: a pinned name has its
        one version, and the alias it was pinned by (if any) always points at it."""
        if self.pinned is None:
            return versions, aliases
        versions = [self.pinned] if self.pinned in versions else []
        return versions, ({self.pin_alias: self.pinned} if self.pin_alias and versions else {})

    @property
    def latest(self) -> int | None:
        return self.available[-1] if self.available else None

    def eager(self) -> list[int]:
        if self.latest is None:
            return []
        wanted = {self.latest, *(v for v in self.aliases.values() if v in self.available)}
        return sorted(wanted)


class Registry:
    def __init__(self, refs: list[str], options: ServeOptions, metrics: Metrics) -> None:
        self.options = options
        self.metrics = metrics
        self.store = core.open_store(options.store)
        self.models: dict[str, ServedModel] = {}
        self.whole_store = not refs
        self.traffic = Load()
        self.ready = False
        for ref in refs:
            self._add_ref(ref)
        if self.whole_store:
            for name in core.store_names(self.store):
                self.models[name] = ServedModel(name, "store")

    def _add_ref(self, ref: str) -> None:
        from modelforge.errors import UsageError

        loc = core.resolve(ref, self.store)
        if loc.origin == "file":
            name = self.options.name or loc.path.stem
            model = ServedModel(name, "file", path=loc.path, available=[1])
        else:
            name = self.options.name or loc.name
            pinned = loc.version if ":" in ref else None
            tag = ref.rpartition(":")[2] if pinned is not None else ""
            alias = tag if tag and not (tag.isascii() and tag.isdigit()) else None
            model = ServedModel(loc.name, "store", pinned=pinned, pin_alias=alias)
            if name != loc.name:
                raise UsageError(
                    "--name renames a model file; store models are served under their name",
                    code="invalid_option",
                )
        if name in self.models:
            raise UsageError(
                f"two MODEL arguments would both be served as '{clip(name)}'",
                hint="serve each name once; use --name for a single file",
                code="invalid_option",
            )
        self.models[name] = model

    # -- store state -----------------------------------------------------------------
    def _refresh(self, model: ServedModel) -> None:
        """Re-read versions and aliases of a store model (files never change)."""
        if model.origin != "store":
            return
        versions, aliases = model.pin(*core.store_versions(self.store, model.name))
        model.available = versions
        model.aliases = {a: v for a, v in aliases.items() if v in versions}

    # -- loading ---------------------------------------------------------------------
    def _open(self, model: ServedModel, version: int) -> ServedVersion:
        """Blocking: read, check, create sessions, warm up. Runs in a worker thread."""
        from modelforge.serve import affinity

        affinity.unpin_here()  # the sessions' onnxruntime threads may use every CPU
        opts = self.options
        stamp = None
        if model.origin == "file":
            location = core.file_location(model.path)
        else:
            stamp = self._stamp(model.name, version)
            location = core.store_location(self.store, model.name, version)
        opened = core.open_version(
            location,
            instances=opts.instances,
            threads=opts.intra_threads,
            session_config=opts.session,
            # --threads not given: a model whose full batch runs under 1 ms gets one thread
            probe_rows=opts.max_batch_size if opts.threads is None else 0,
        )
        label = f"model '{model.name}' version {version}"
        batching = self._batching(opened, label)
        stats = self.metrics.version_stats(model.name, version)
        batcher = Batcher(
            opened,
            batching=batching,
            max_batch=opts.max_batch_size,
            delay_s=opts.max_queue_delay_us / 1e6,
            max_queue=opts.max_queue,
            on_batch=stats.batch_ran,
            label=label,
            inline_us=opts.inline_below_us,
            load=self.traffic,
            colocate=opts.loop_cpu != "auto" or _short_runs(opts, opened),
        )
        n = len(opened.sessions)
        stats.watch(lambda: n - len(batcher.free), lambda: len(batcher.queue))
        if opts.warmup:
            feeds = core.warmup_feeds(opened.schema)
            if feeds is not None:
                names = [p.name for p in opened.outputs]
                for i in range(len(opened.sessions)):
                    try:
                        values = opened.run(i, names, feeds)
                        for port, value in zip(opened.outputs, values, strict=True):
                            opened.flatten(port, value)  # learns ZipMap labels
                    except Exception as exc:  # onnxruntime raises pybind exception types
                        log.warning("%s: warm-up run failed: %s", label, exc)
                        break
        return ServedVersion(model.name, version, opened, batcher, stats, batching, stamp)

    def _stamp(self, name: str, version: int) -> tuple[int, int] | None:
        """Which store entry a version number names now: a store deleted and filled again
        (or a version folder replaced) reuses numbers for other models."""
        try:
            st = (self.store.version_dir(name, version) / "meta.json").stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _replaced(self, name: str, stamps: list[tuple[int, tuple[int, int]]]) -> list[int]:
        """Loaded versions whose store entry is no longer the one that was loaded."""
        return [v for v, stamp in stamps if self._stamp(name, v) not in (None, stamp)]

    def _batching(self, opened: core.OpenedVersion, label: str) -> bool:
        """``auto``: symbolic dim 0 everywhere *and* the row-independence probe passes
        (serve/probe.py); ``on`` skips the probe; ``off`` never batches."""
        from modelforge.serve.probe import rows_independent

        mode = self.options.batching
        if mode == "off":
            return False
        missing = core.batch_dim_missing(opened.inputs, opened.outputs)
        if missing is not None:
            if mode == "on":  # --batching on skips the probe, not the shapes
                log.warning("%s: dynamic batching is off: %s", label, missing)
            return False
        disagree = core.batch_dims_disagree(opened.inputs, opened.outputs)
        if disagree is not None:
            log.warning("%s: dynamic batching is off: %s", label, disagree)
            return False
        if mode == "on":
            return True
        why = rows_independent(opened)
        if why is not None:
            log.warning("%s: dynamic batching is off: %s; --batching on forces it", label, why)
            return False
        return True

    async def _ensure(self, model: ServedModel, version: int) -> ServedVersion:
        sv = model.loaded.get(version)
        if sv is not None:
            return sv
        lock = model.locks.setdefault(version, asyncio.Lock())
        async with lock:
            sv = model.loaded.get(version)
            if sv is None:
                unloads = model.unloads
                try:
                    sv = await asyncio.to_thread(self._open, model, version)
                except ModelForgeError as exc:
                    model.reasons[version] = exc.message
                    raise HttpError(
                        503,
                        f"model '{clip(model.name)}' version {version} cannot be loaded: "
                        f"{exc.message}",
                    ) from None
                if model.unloads != unloads:  # unloaded meanwhile: its sessions stayed
                    asyncio.get_running_loop().create_task(self._drain(sv))  # resident
                    raise unavailable(
                        f"model '{clip(model.name)}' was unloaded while version {version} "
                        f"was loading; load it with POST v2/repository/models/"
                        f"{clip(model.name)}/load"
                    )
                model.loaded[version] = sv
                model.reasons.pop(version, None)
        return sv

    def load_all_blocking(self) -> None:
        """Start-up: load and warm the eager versions of every model (errors propagate)."""
        for model in self.models.values():
            self._refresh(model)
            if not model.available:
                from modelforge.errors import ModelNotFoundError

                raise ModelNotFoundError(f"model '{clip(model.name)}' has no versions to serve")
            for v in model.eager():
                model.loaded[v] = self._open(model, v)
        self.ready = True

    # -- lookups from requests -------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            names = ", ".join(clip(n) for n in sorted(self.models)) or "none"
            raise not_found(f"unknown model '{clip(name)}' (served: {names})")
        return model

    def version_number(self, model: ServedModel, version: str | None) -> int:
        if version is None or version == "":
            if model.latest is None:
                raise not_found(f"model '{clip(model.name)}' has no versions")
            return model.latest
        if version.isascii() and version.isdigit():  # not "²" or other scripts' digits
            digits = version.lstrip("0") or "0"  # int() refuses past 4,300 digits
            v = int(digits) if len(digits) <= 18 else -1
            if v not in model.available:
                raise not_found(
                    f"model '{clip(model.name)}' has no version {clip(digits)} (versions: "
                    f"{', '.join(map(str, model.available)) or 'none'})"
                )
            return v
        if version == "latest" and model.latest is not None:
            return model.latest
        if version in model.aliases:
            return model.aliases[version]
        raise not_found(
            f"model '{clip(model.name)}' has no version or alias '{clip(version)}' (versions: "
            f"{', '.join(map(str, model.available)) or 'none'}; aliases: "
            f"{', '.join(sorted(model.aliases)) or 'none'})"
        )

    async def get(self, name: str, version: str | None) -> ServedVersion:
        model = self.model(name)
        if model.unloaded:
            raise unavailable(
                f"model '{clip(name)}' is unloaded; load it with POST "
                f"v2/repository/models/{clip(name)}/load"
            )
        return await self._ensure(model, self.version_number(model, version))

    def peek(self, name: str, version: str | None) -> ServedVersion | None:
        """The loaded version, if any (readiness and stats never trigger a load)."""
        model = self.model(name)
        return None if model.unloaded else model.loaded.get(self.version_number(model, version))

    # -- repository extension --------------------------------------------------------
    def index(self, ready_only: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in sorted(self.models):
            m = self.models[name]
            for v in m.available:
                state = "UNAVAILABLE" if m.unloaded else ("READY" if v in m.loaded else "UNLOADED")
                if ready_only and state != "READY":
                    continue
                out.append(
                    {
                        "name": name,
                        "version": str(v),
                        "state": state,
                        "reason": m.reasons.get(v, "") if state != "READY" else "",
                    }
                )
        return out

    async def load(self, name: str) -> None:
        model = self.model(name)
        model.broken.clear()
        await asyncio.to_thread(self._refresh, model)
        model.unloaded = False
        for v in model.eager():
            await self._ensure(model, v)

    async def unload(self, name: str) -> None:
        model = self.model(name)
        model.unloaded = True
        model.unloads += 1
        loaded, model.loaded = model.loaded, {}
        await asyncio.gather(*(self._drain(sv) for sv in loaded.values()))

    async def _drain(self, sv: ServedVersion) -> None:
        finished = await sv.batcher.drain(self.options.shutdown_timeout_s)
        if not finished:
            log.warning("%s: requests still running after drain timeout", sv.label)

    # -- live store polling ------------------------------------------------------------
    async def poll_forever(self) -> None:
        """Re-read the store every poll interval. A store that cannot be read (its folder
        deleted, unmounted or unreadable, damaged metadata) leaves what is served as it
        was, said once on stderr (and once more when it can be read again): it used to be
        silent, and a deleted store folder unserved every model with readiness still true."""
        failing = ""
        while True:
            await asyncio.sleep(self.options.poll_interval_s)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = exc.message if isinstance(exc, ModelForgeError) else f"{exc}"
                if why != failing:
                    log.warning(
                        "warning: cannot re-read the store at '%s': %s; still serving what "
                        "was loaded, store changes are not seen until it can be read again",
                        clip(str(self.store.root), 200),
                        clip(why, 300),
                    )
                failing = why
            else:
                if failing:
                    log.warning("the store at '%s' can be read again", clip(str(self.store.root)))
                failing = ""

    def _check_store(self) -> None:
        """Raise when the store folder is gone while store models are served: an empty
        listing then means "unreadable", not "every version removed"."""
        if not any(m.origin == "store" for m in self.models.values()):
            return
        self.store.check_marker()
        if not self.store.models_dir.is_dir():
            raise ModelForgeError(
                f"its folder '{clip(str(self.store.models_dir), 200)}' is gone",
                code="store_missing",
            )

    async def poll_once(self) -> None:
        await asyncio.to_thread(self._check_store)
        if self.whole_store:
            names = await asyncio.to_thread(core.store_names, self.store)
            for name in names:
                self.models.setdefault(name, ServedModel(name, "store"))
        for model in list(self.models.values()):
            if model.origin != "store" or model.unloaded:
                continue
            await self._poll_model(model)

    async def _poll_model(self, model: ServedModel) -> None:
        found = await asyncio.to_thread(core.store_versions, self.store, model.name)
        versions, aliases = model.pin(*found)
        stamps = [(v, sv.stamp) for v, sv in model.loaded.items() if sv.stamp is not None]
        for v in await asyncio.to_thread(self._replaced, model.name, stamps):
            old = model.loaded.pop(v, None)  # requests load the new one; the old one drains
            if old is not None:
                log.warning("%s was replaced in the store; loading it again", old.label)
                asyncio.get_running_loop().create_task(self._drain(old))
        aliases = {a: v for a, v in aliases.items() if v in versions}
        # load new targets before pointing anything at them; a version that cannot be
        # loaded is left out (said once), and aliases moved onto it keep their old target
        targets = {*(aliases.values()), *(versions[-1:])}
        for v in sorted(targets - model.broken):
            if v not in model.loaded:
                try:
                    await self._ensure(model, v)
                except HttpError as exc:
                    model.broken.add(v)
                    log.warning(
                        "%s; it is not served (fix it, then POST v2/repository/models/%s/load)",
                        exc.message,
                        model.name,
                    )
        model.available = [v for v in versions if v not in model.broken]
        model.aliases = {
            a: v if v not in model.broken else model.aliases[a]
            for a, v in aliases.items()
            if v not in model.broken or a in model.aliases
        }
        for v in [v for v in model.loaded if v not in versions]:
            sv = model.loaded.pop(v)
            asyncio.get_running_loop().create_task(self._drain(sv))

    async def shutdown(self, budget_s: float = 1.0) -> None:
        """Stop every batcher. Runs after uvicorn's graceful wait (``shutdown_timeout_s``),
        when the HTTP requests are done already: what is left (gRPC, timed-out runs still
        inside onnxruntime) gets ``budget_s`` in all, so that exit stays within ~10 s."""
        self.ready = False
        started = time.monotonic()
        for model in self.models.values():
            for sv in model.loaded.values():
                left = max(0.05, budget_s - (time.monotonic() - started))
                await sv.batcher.drain(left)


def _short_runs(opts: ServeOptions, opened: core.OpenedVersion) -> bool:
    """``--loop-cpu auto`` puts an instance thread on the loop's CPU only where that costs
    no parallelism: one instance whose one intra-op thread was chosen because a full batch
    runs under a millisecond. Longer runs would take the loop's CPU from it; several
    instances on one CPU would run one at a time."""
    return opts.instances == 1 and opts.threads is None and opened.threads == 1
