"""The JAX backend: per design point, ``jit(vmap(...))`` over blocks of replicates.

Every kernel is compiled at one fixed width, ``study.vmap_width`` (W), and
blocks are aligned to replicate numbers: block ``b`` holds replicates
``b*W .. b*W + W - 1``, replicate ``r`` in lane ``r % W``, and every lane gets
its real key, also lanes outside the batch or past the last replicate. A
kernel's input is therefore a function of (seed, design point, block) alone,
so no number depends on batch sizes, on what is pending (resume), or on the
study's replicate count. One kernel makes a block's data; each method has a
kernel of its own on that data, so a method's numbers do not depend on which
other methods the study has.

Float factors are traced arguments (one compile serves all their levels);
other factors (ints that set shapes, strings, booleans) are static. A kernel
whose tracing needs a float factor as a Python value (``if eps > 0:``) is
compiled with every factor static instead. Numeric fixed inputs are
arguments, placed on the device once per process.

Keys: lane ``r`` of the data kernel gets
``wrap_key_data(SeedSequence(seed, spawn_key=(point_key, r)).generate_state(2,
np.uint32), impl="threefry2x32")``, a method taking ``key`` the same with
``spawn_key=(point_key, r, method_key)`` (DESIGN §2), derived vectorised for a
whole block. ``jax_threefry_partitionable`` is pinned to False: it changes
the numbers (JAX flipped its default in 0.5) and is 2-3x faster on CPU here.

Layers: imports ``backends`` (the protocol), ``backends.numpy`` (argument
injection), ``outputs, results, grid, streams, study, errors``; 3rd-party:
jax (this module is imported only for jax studies).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simstudy import streams
from simstudy.backends import Cell
from simstudy.backends.numpy import kwargs_of
from simstudy.cube import FAILED, OK
from simstudy.errors import UsageError
from simstudy.grid import Batch
from simstudy.outputs import (
    MAX_OUTPUT_VALUES,
    OutputError,
    OutputSpecs,
    keys_problem,
    name_problem,
    nonfinite_message,
    shape_problem,
)
from simstudy.results import BatchResult, Failure, failure, worker_name
from simstudy.study import Level, Study

__all__ = [
    "BACKEND",
    "devices",
    "jax_device",
    "kernels_for",
    "replay_cell",
    "run_jax_batch",
    "use_compilation_cache",
]

THREEFRY_PARTITIONABLE = False
_TRACE_NEEDS_VALUE = (
    jax.errors.ConcretizationTypeError,  # also TracerBoolConversionError
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


def jax_device(platform: str | None) -> Any:
    """Return the first JAX device of ``platform`` (None: JAX's default)."""
    if platform is None:
        return jax.devices()[0]
    try:
        return jax.devices(platform)[0]
    except RuntimeError:
        seen = sorted({d.platform for d in jax.devices()})
        raise UsageError(
            f"--device {platform}: JAX sees no {platform} device here "
            f"(it sees: {', '.join(seen)}).",
            hint="install a GPU build of jaxlib (see docs/jax.md) or use --device cpu",
        ) from None


def devices(platform: str | None = None) -> dict[str, str]:
    """Describe this process's JAX: versions, the device of ``platform``
    (None: the default), kernel settings."""
    from importlib.metadata import version

    dev = jax_device(platform)
    return {
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "jax-device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "jax-x64": str(jnp.result_type(float) == jnp.float64),
    }


class _KernelError(Exception):
    """A kernel could not be built: tracing raised, or its outputs are unusable."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(slots=True)
class _Kernel:
    """A compiled kernel, or why there is none."""

    run: Any = None
    dynamic: tuple[str, ...] = ()  # factors passed as traced arguments
    outputs: dict[str, tuple[tuple[int, ...], Any]] | None = None  # per lane
    data_spec: Any = None  # data kernel: the block's data (ShapeDtypeStructs)
    error: _KernelError | None = None
    per_point: bool = False  # tracing needs float factors' values: one per point


def _where(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in levels.items()) or "the only point"


class _Kernels:
    """The compiled kernels of one study in this process, and its fixed inputs."""

    def __init__(self, study: Study, platform: str | None) -> None:
        self.study = study
        self.device = jax_device(platform)
        self.cache: dict[tuple[Any, ...], _Kernel] = {}
        self.locks: dict[tuple[Any, ...], threading.Lock] = {}
        self.pool: cf.ThreadPoolExecutor | None = None
        fixed = {}
        self.static_fixed = {}
        for name, value in study.fixed_inputs.items():
            arr = np.asarray(value) if not isinstance(value, Mapping) else None
            if arr is not None and arr.dtype.kind in "biuf":
                fixed[name] = jax.device_put(arr, self.device)
            else:
                self.static_fixed[name] = value
        self.fixed = fixed

    def _args(self, levels: Mapping[str, Any], dynamic: tuple[str, ...]) -> Any:
        values = {k: jnp.asarray(levels[k]) for k in dynamic}
        return jax.device_put(values, self.device), self.fixed

    def _compile(
        self,
        kind: str,
        m: int,
        levels: Mapping[str, Any],
        build: Callable[[tuple[str, ...]], _Kernel],
        extra: Any = None,
    ) -> _Kernel:
        """Compile with float factors traced, shared by all their levels; a
        kernel whose tracing needs their values is compiled per point, with
        every factor static. ``extra`` joins the cache key."""
        floats = tuple(k for k, v in levels.items() if type(v) is float)
        static = tuple((k, levels[k]) for k in levels if k not in floats)
        shared: tuple[Any, ...] = (kind, m, static, extra)
        # one compile per kernel, whichever thread (ahead-of-time or not) asks
        with self.locks.setdefault(shared, threading.Lock()):
            kernel = self.cache.get(shared)
            if kernel is None and floats:
                try:
                    kernel = self._build(kind, m, levels, build, floats)
                except _TRACE_NEEDS_VALUE:
                    kernel = _Kernel(per_point=True)
                self.cache[shared] = kernel
            if kernel is not None and not kernel.per_point:
                return kernel
            own = (kind, m, tuple(levels.items()), extra)
            kernel = self.cache.get(own)
            if kernel is None:
                try:
                    kernel = self._build(kind, m, levels, build, ())
                except _TRACE_NEEDS_VALUE as exc:
                    kernel = _Kernel(error=self._error(kind, m, levels, exc))
                self.cache[own] = kernel
            return kernel

    def _build(
        self,
        kind: str,
        m: int,
        levels: Mapping[str, Any],
        build: Callable[[tuple[str, ...]], _Kernel],
        dynamic: tuple[str, ...],
    ) -> _Kernel:
        """Build one kernel; errors other than needing a traced value are kept."""
        try:
            return build(dynamic)
        except _TRACE_NEEDS_VALUE:
            raise
        except _KernelError as exc:
            return _Kernel(error=exc)
        except Exception as exc:
            return _Kernel(error=self._error(kind, m, levels, exc))

    def _error(
        self, kind: str, m: int, levels: Mapping[str, Any], exc: BaseException
    ) -> _KernelError:
        what = (
            "data function"
            if kind == "data"
            else f"method {self.study.methods[m].name!r}"
        )
        advice = ""
        if isinstance(exc, _TRACE_NEEDS_VALUE):
            advice = (
                " used a traced value as a Python value; on data use jax.numpy, "
                "jnp.where and jax.lax control flow, not numpy, float(), int() "
                "or if"
            )
        return _KernelError(
            f"{what} at {_where(levels)} (tracing the jax kernel){advice}: "
            f"{type(exc).__name__}: {exc}",
            exc,
        )

    def _lower(self, fn: Any, *args: Any) -> Any:
        with (
            jax.threefry_partitionable(THREEFRY_PARTITIONABLE),
            jax.default_device(self.device),
        ):
            return jax.jit(fn).lower(*args)

    def prepare(self, work: list[tuple[dict[str, Any], tuple[int, ...]]]) -> None:
        """Compile these points' kernels on background threads, in order.

        XLA compiles on one core and releases the GIL, so two compiles, or a
        compile and a running kernel, overlap; the executables (and so the
        numbers) are the ones an on-demand compile makes.
        """
        if self.pool is None:
            self.pool = cf.ThreadPoolExecutor(2, thread_name_prefix="simstudy-jit")
        for levels, methods in work:
            self.pool.submit(self._prepare_point, levels, methods)

    def _prepare_point(self, levels: dict[str, Any], methods: tuple[int, ...]) -> None:
        data = self.data(levels)
        if data.error is None:
            for m in methods:
                self.method(m, levels, data)

    def close(self) -> None:
        """Drop compiles not started yet (a running one finishes on its own)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def data(self, levels: Mapping[str, Any]) -> _Kernel:
        """The data kernel of a design point: (key words, args) -> block data."""
        study, width = self.study, self.study.vmap_width or 1

        def build(dynamic: tuple[str, ...]) -> _Kernel:
            static = {k: v for k, v in levels.items() if k not in dynamic}
            kwargs = _injector(study.data_params, static, self.static_fixed)
            func: Callable[..., Any] = study.data_func  # type: ignore[assignment]

            def one(words: Any, dyn: Any, fixed: Any) -> Any:
                return func(**kwargs(words, dyn, fixed))

            fn = jax.vmap(one, in_axes=(0, None, None))
            words = jax.device_put(np.zeros((width, 2), np.uint32), self.device)
            lowered = self._lower(fn, words, *self._args(levels, dynamic))
            spec = lowered.out_info
            _check_memory(spec, self.device, width)
            return _Kernel(lowered.compile(), dynamic, data_spec=spec)

        return self._compile("data", -1, levels, build)

    def method(self, m: int, levels: Mapping[str, Any], data: _Kernel) -> _Kernel:
        """The kernel of method ``m`` at a design point: (data, words, args) -> outputs."""
        study = self.study
        method = study.methods[m]

        def build(dynamic: tuple[str, ...]) -> _Kernel:
            static = {k: v for k, v in levels.items() if k not in dynamic}
            kwargs = _injector(method.params, static, self.static_fixed)

            def one(x: Any, words: Any, dyn: Any, fixed: Any) -> Any:
                out = method.func(x, **kwargs(words, dyn, fixed))
                return dict(out) if isinstance(out, Mapping) else {"value": out}

            fn = jax.vmap(one, in_axes=(0, 0, None, None))
            width = study.vmap_width or 1
            words = jax.device_put(np.zeros((width, 2), np.uint32), self.device)
            lowered = self._lower(
                fn, data.data_spec, words, *self._args(levels, dynamic)
            )
            outputs = _output_specs(method.name, lowered.out_info, levels)
            return _Kernel(lowered.compile(), dynamic, outputs)

        # a method kernel is shared no wider than the data kernel it reads
        return self._compile("method", m, levels, build, extra=id(data))


def _injector(
    params: tuple[str, ...], static: Mapping[str, Any], static_fixed: Mapping[str, Any]
) -> Callable[[Any, Any, Any], dict[str, Any]]:
    """Build the keyword arguments of a user function inside a kernel lane."""

    def kwargs(words: Any, dyn: Mapping[str, Any], fixed: Mapping[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for p in params:
            if p == "key":
                out[p] = jax.random.wrap_key_data(words, impl="threefry2x32")
            elif p in dyn:
                out[p] = dyn[p]
            elif p in static:
                out[p] = static[p]
            elif p in fixed:
                out[p] = fixed[p]
            elif p in static_fixed:
                out[p] = static_fixed[p]
        return out

    return kwargs


def _output_specs(
    method: str, info: Any, levels: Mapping[str, Any]
) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Check a method kernel's outputs as traced; return name -> (lane shape, dtype)."""
    out = {}
    for name, spec in info.items():
        problem = name_problem(method, name, levels)
        if problem is not None:
            raise _KernelError(problem)
        if not hasattr(spec, "shape") or np.dtype(spec.dtype).kind not in "biuf":
            got = getattr(spec, "dtype", type(spec).__name__)
            raise _KernelError(
                f"method {method!r} output {name!r} is not numeric: got {got}."
            )
        shape = tuple(spec.shape[1:])
        if math.prod(shape) > MAX_OUTPUT_VALUES:
            raise _KernelError(
                f"method {method!r} output {name!r} has {math.prod(shape):,} values; "
                f"expected at most {MAX_OUTPUT_VALUES:,} per task (return a "
                "summary of it, not the data)."
            )
        out[name] = (shape, spec.dtype)
    return out


def _check_memory(spec: Any, dev: Any, width: int) -> None:
    """Refuse a block whose data alone would take over a quarter of the memory."""
    need = sum(
        math.prod(s.shape) * np.dtype(s.dtype).itemsize
        for s in jax.tree_util.tree_leaves(spec)
    )
    stats = dev.memory_stats() or {}
    limit = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"
    )
    if need > limit / 4:
        per = need / width
        fits = 2 ** max(0, int(math.log2(max(1.0, limit / 4 / per))))
        raise _KernelError(
            f"a block of {width:,} replicates of the data takes {need / 2**20:,.0f} "
            f"MB, over a quarter of the {limit / 2**30:,.1f} GB of {dev}; lower "
            f"Study(vmap_width=...) to {fits:,} or less."
        )


_kernels: weakref.WeakKeyDictionary[Study, dict[str | None, _Kernels]] = (
    weakref.WeakKeyDictionary()
)


def kernels_for(study: Study, platform: str | None) -> _Kernels:
    per = _kernels.setdefault(study, {})
    ks = per.get(platform)
    if ks is None:
        ks = per[platform] = _Kernels(study, platform)
    return ks


def run_jax_batch(
    study: Study, batch: Batch, specs: OutputSpecs | None = None
) -> BatchResult:
    """Run a batch of a jax study block by block; failures become records.

    Per task, ``seconds`` is the kernel time per lane (the first method also
    carries the data kernel's) and ``started`` spreads a block's lanes over
    its kernel time, so the timeline shows blocks as the device ran them.
    """
    return _BatchRun(study, batch, specs or OutputSpecs()).run()


_sync: Callable[[Any], Any] = jax.block_until_ready


class _BatchRun:
    """The state of one batch: its arrays, its kernels, its failures."""

    def __init__(self, study: Study, batch: Batch, specs: OutputSpecs) -> None:
        self.study, self.batch = study, batch
        self.ks = kernels_for(study, batch.device)
        self.width = study.vmap_width or 1
        self.levels = dict(batch.levels)
        self.pkey = streams.point_key(self.levels)
        self.methods = [study.methods[m] for m in batch.methods]
        b, k = batch.stop - batch.start, len(batch.methods)
        self.status = np.zeros((b, k), np.int8)
        self.seconds = np.full((b, k), np.nan, np.float64)
        self.started = np.full((b, k), np.nan, np.float64)
        self.rows: dict[str, np.ndarray[Any, Any]] = {}
        self.failures: list[tuple[int, int, Failure]] = []
        self.args: dict[tuple[str, ...], Any] = {}
        self.first = batch.start // self.width  # the blocks the batch touches
        self.last = (batch.stop - 1) // self.width
        self.words: dict[str | None, np.ndarray[Any, Any]] = {}
        self.data = self.ks.data(self.levels)
        self.kernels = [self._method_kernel(j, specs) for j in range(k)]

    def _method_kernel(self, j: int, specs: OutputSpecs) -> _Kernel | None:
        """Method ``j``'s kernel, or None after recording why its tasks fail."""
        method = self.methods[j]
        kern, error = None, self.data.error
        if error is None:
            kern = self.ks.method(self.batch.methods[j], self.levels, self.data)
            error = kern.error or _spec_error(method.name, kern, specs)
        if error is None:
            return kern
        # the user's exception keeps its traceback; our own checks have none
        self._fail(
            j,
            range(len(self.status)),
            error.cause or OutputError(str(error)),
            str(error),
            engine=error.cause is None,
        )
        return None

    def _fail(
        self,
        j: int,
        rows: Any,
        exc: BaseException,
        message: str,
        *,
        engine: bool = False,
    ) -> None:
        for i in rows:
            self.status[i, j] = FAILED
            r = self.batch.start + int(i)
            record = failure(
                r,
                self.methods[j].name,
                exc,
                message,
                self.study.source_file,
                engine=engine,
            )
            self.failures.append((int(i), j, record))

    def _args(self, dynamic: tuple[str, ...]) -> Any:
        """The traced factor values and fixed inputs, on the device once a batch."""
        args = self.args.get(dynamic)
        if args is None:
            args = self.args[dynamic] = self.ks._args(self.levels, dynamic)
        return args

    def _words(self, block: int, method: str | None) -> Any:
        """The key words of a block's lanes (data, or a method's), on the
        device; derived for all of the batch's blocks at the first ask."""
        every = self.words.get(method)
        if every is None:
            w = self.width
            reps = np.arange(self.first * w, (self.last + 1) * w)
            after = () if method is None else (streams.key(method),)
            every = streams.spawn_words(
                self.study.seed, (self.pkey,), reps, after, words=2
            )
            self.words[method] = every
        at = (block - self.first) * self.width
        return jax.device_put(every[at : at + self.width], self.ks.device)

    def run(self) -> BatchResult:
        live = [j for j, kern in enumerate(self.kernels) if kern is not None]
        wall0, perf0 = time.time(), time.perf_counter()
        batch, width = self.batch, self.width
        for block in range(self.first, self.last + 1) if live else ():
            lo = max(batch.start, block * width)
            hi = min(batch.stop, (block + 1) * width)
            self._block(block, lo, hi, live)
        self.started += wall0 - perf0
        self.failures.sort(key=lambda f: (f[0], f[1]))
        b, k = self.status.shape
        return BatchResult(
            batch,
            self.status,
            self.seconds.astype(np.float32),
            self.started,
            self.rows,
            [f[2] for f in self.failures],
            f"{worker_name()}/{self.ks.device.platform}:{self.ks.device.id}",
            {
                self.methods[j].name: tuple(sorted(kern.outputs))
                for j, kern in enumerate(self.kernels)
                if kern is not None and kern.outputs is not None
            },
            np.zeros((b, k), np.int16),
            [],
        )

    def _block(self, block: int, lo: int, hi: int, live: list[int]) -> None:
        """Run the data kernel and every live method's on one block."""
        lanes = slice(lo - block * self.width, hi - block * self.width)
        rows = np.arange(lo - self.batch.start, hi - self.batch.start)
        where = _where(self.levels)
        t0 = time.perf_counter()
        try:
            words = self._words(block, None)
            x = _sync(self.data.run(words, *self._args(self.data.dynamic)))
        except Exception as exc:
            message = f"data function at {where} (running the jax kernel): {exc}"
            for j in live:
                self._fail(j, rows, exc, message)
            return
        t1 = time.perf_counter()
        carry = t1 - t0  # the data kernel's time goes to the first method
        for j in live:
            kern, method = self.kernels[j], self.methods[j]
            assert kern is not None
            try:
                lane_words = (
                    self._words(block, method.name) if method.takes_key else words
                )
                out = kern.run(x, lane_words, *self._args(kern.dynamic))
                host = {
                    n: np.asarray(v)[lanes].astype(np.float64) for n, v in out.items()
                }
            except Exception as exc:
                message = (
                    f"method {method.name!r} at {where} (running the jax kernel): {exc}"
                )
                self._fail(j, rows, exc, message)
                continue
            t2 = time.perf_counter()
            per = (t2 - t1 + carry) / self.width
            self.seconds[rows, j] = per
            self.started[rows, j] = t1 + per * np.arange(len(rows))
            self._place(j, rows, host)
            t1, carry = t2, 0.0

    def _place(
        self, j: int, rows: np.ndarray[Any, Any], host: dict[str, np.ndarray[Any, Any]]
    ) -> None:
        """Store a block's outputs of method ``j``; non-finite lanes fail."""
        b, k = self.status.shape
        ok = np.ones(len(rows), bool)
        for name, arr in host.items():
            finite = np.isfinite(arr.reshape(len(rows), -1)).all(axis=1)
            for i in np.flatnonzero(~finite & ok):
                message = nonfinite_message(self.methods[j].name, name, arr[i])
                exc = OutputError(message)
                self._fail(j, rows[i : i + 1], exc, message, engine=True)
            ok &= finite
            if name not in self.rows:
                self.rows[name] = np.full((b, k, *arr.shape[1:]), np.nan)
            self.rows[name][rows, j] = arr
        for name in host:  # a failed task has no outputs, finite or not
            self.rows[name][rows[~ok], j] = np.nan
        self.status[rows[ok], j] = OK


def _spec_error(method: str, kern: _Kernel, specs: OutputSpecs) -> _KernelError | None:
    """Check a kernel's outputs against those the method's first tasks had."""
    assert kern.outputs is not None
    names = tuple(sorted(kern.outputs))
    problem = keys_problem(method, names, specs.names.get(method), "its first task")
    for name, (shape, _) in kern.outputs.items():
        problem = problem or shape_problem(
            method, name, shape, specs.shapes.get(name), "the first task"
        )
    return None if problem is None else _KernelError(problem)


def replay_cell(study: Study, levels: Mapping[str, Any], r: int, m: int) -> Any:
    """Compute one cell unvectorised and eagerly (prints and pdb work).

    Agrees with the engine's kernels to float tolerance, not bit for bit
    (XLA compiles a vmapped kernel differently). Returns (data, outputs).
    """
    pkey = streams.point_key(levels)
    values = {**levels, **study.fixed_inputs}
    method = study.methods[m]

    def key(after: tuple[int, ...]) -> Any:
        rows = streams.spawn_words(study.seed, (pkey,), np.array([r]), after, words=2)
        return jax.random.wrap_key_data(rows[0], impl="threefry2x32")

    with jax.threefry_partitionable(THREEFRY_PARTITIONABLE):
        kw = kwargs_of(study.data_params, values, None)
        if "key" in study.data_params:
            kw["key"] = key(())
        data = study.data_func(**kw)  # type: ignore[misc]
        kw = kwargs_of(method.params, values, None)
        if method.takes_key:
            kw["key"] = key((streams.key(method.name),))
        out = method.func(data, **kw)
    return data, dict(out) if isinstance(out, Mapping) else {"value": out}


def cache_dir() -> str | None:
    """Where compiled kernels are kept between runs (None: not kept).

    ``SIMSTUDY_JAX_CACHE`` names the folder (``off`` turns the cache off);
    default ``$XDG_CACHE_HOME/simstudy/jax`` (``~/.cache/simstudy/jax``).
    JAX keys each entry by the kernel's HLO, device, flags and versions, so a
    cached executable is the one a fresh compile makes: same numbers.
    """
    setting = os.environ.get("SIMSTUDY_JAX_CACHE")
    if setting is not None:
        return None if setting.strip().lower() in ("", "off", "0") else setting
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "simstudy", "jax")


def use_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache, unless the user set one."""
    config: Any = jax.config  # untyped
    folder = cache_dir()
    if folder is None or config.jax_compilation_cache_dir:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return  # an unwritable cache only costs compile time
    config.update("jax_compilation_cache_dir", folder)
    config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class JaxBackend:
    """Study functions take ``key`` and run jitted, vmapped over replicate blocks."""

    name = "jax"
    default_scheduler = "jax"
    local_scheduler = "jax"

    def check(
        self,
        study: Study,
        *,
        scheduler: str,
        device: str | None,
        task_timeout: float | None,
    ) -> None:
        if scheduler not in ("jax", "distributed"):
            raise UsageError(
                f"study {study.name!r} uses backend='jax', which runs in this "
                f"process (--scheduler jax, the default) or on Dask workers "
                f"(--scheduler distributed or --address), not on {scheduler!r}.",
                hint="drop --scheduler",
            )
        if study.scheme != "spawn":
            raise UsageError(
                f"backend='jax' takes its keys from the spawn scheme, not "
                f"{study.scheme!r}.",
                hint="drop --rng",
            )
        if device not in (None, "cpu", "gpu"):
            raise UsageError(
                f"--device {device!r} is unknown; expected cpu or gpu.",
                hint="drop --device for JAX's default device",
            )
        if task_timeout is not None:
            raise UsageError(
                "--task-timeout cannot interrupt a jitted jax kernel.",
                hint="drop --task-timeout",
            )
        if scheduler == "jax":
            jax_device(device)  # a missing GPU is refused before anything is written

    def run_batch(
        self, study: Study, batch: Batch, specs: OutputSpecs | None = None
    ) -> BatchResult:
        return run_jax_batch(study, batch, specs)

    def pilot(self, study: Study, batch: Batch) -> BatchResult:
        run_jax_batch(study, batch, None)  # the first call compiles
        return run_jax_batch(study, batch, None)

    def cell(
        self, study: Study, batch: Batch, specs: OutputSpecs, *, debugger: bool
    ) -> Cell:
        """Compute a cell eagerly, unvectorised (where prints and ``--pdb``
        work), then through the engine's kernel, whose outputs are the ones
        compared with the store bit for bit."""
        out = Cell()
        levels, r, m = dict(batch.levels), batch.start, batch.methods[0]
        try:
            out.data, eager = replay_cell(study, levels, r, m)
        except Exception as exc:
            out.error = exc
            if debugger:
                import pdb  # noqa: T100  (--pdb asks for the debugger)

                pdb.post_mortem(exc.__traceback__)
            return out
        result = run_jax_batch(study, batch, specs)
        if result.status[0, 0] != OK:
            f = result.failures[0]
            out.error = RuntimeError(f"{f.type}: {f.message}")
            return out
        out.outputs = {name: values[0, 0] for name, values in result.outputs.items()}
        out.eager_difference = max(
            (
                float(np.max(np.abs(np.asarray(eager[n], np.float64) - v), initial=0))
                for n, v in out.outputs.items()
                if n in eager
            ),
            default=0.0,
        )
        return out

    def provenance(
        self, study: Study, *, scheduler: str, device: str | None
    ) -> dict[str, str]:
        """The device kind and x64 setting (recorded; a change triggers a
        recheck of finished tasks), besides the jax and jaxlib versions."""
        if scheduler == "jax":
            return devices(device)
        return {**devices(), "jax-device": f"dask workers ({device or 'default'})"}

    def prepare(
        self,
        study: Study,
        work: list[tuple[dict[str, Level], tuple[int, ...]]],
        device: str | None,
    ) -> None:
        kernels_for(study, device).prepare(work)


BACKEND = JaxBackend()
