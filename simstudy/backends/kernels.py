"""JAX kernels: a study's data function and methods, jitted and vmapped.

One kernel makes a block's data at a design point; each method has a kernel
of its own on that data, compiled at the study's fixed width
(``vmap_width``). Float factors are traced arguments, so one compile serves
all their levels; a kernel whose tracing needs a float factor's value
(``if eps > 0:``) is compiled with every factor static instead. Numeric
fixed inputs are arguments, placed on the device once per process.
``jax_threefry_partitionable`` is pinned to False: it changes the numbers
(JAX flipped its default in 0.5) and is 2-3x faster on CPU here.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simstudy.declare.outputs import MAX_OUTPUT_VALUES, name_problem
from simstudy.declare.study import Study
from simstudy.errors import UsageError

__all__ = [
    "THREEFRY_PARTITIONABLE",
    "Kernel",
    "KernelError",
    "Kernels",
    "describe",
    "devices",
    "jax_device",
    "kernels_for",
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


class KernelError(Exception):
    """A kernel could not be built: tracing raised, or its outputs are unusable."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(slots=True)
class Kernel:
    """A compiled kernel, or why there is none."""

    run: Any = None
    dynamic: tuple[str, ...] = ()  # factors passed as traced arguments
    outputs: dict[str, tuple[tuple[int, ...], Any]] | None = None  # per lane
    data_spec: Any = None  # data kernel: the block's data (ShapeDtypeStructs)
    error: KernelError | None = None
    per_point: bool = False  # tracing needs float factors' values: one per point


def describe(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in levels.items()) or "the only point"


class Kernels:
    """The compiled kernels of one study in this process, and its fixed inputs."""

    def __init__(self, study: Study, platform: str | None) -> None:
        self.study = study
        self.device = jax_device(platform)
        self.cache: dict[tuple[Any, ...], Kernel] = {}
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

    def arguments(self, levels: Mapping[str, Any], dynamic: tuple[str, ...]) -> Any:
        """The traced factor values and fixed inputs, on the device."""
        values = {k: jnp.asarray(levels[k]) for k in dynamic}
        return jax.device_put(values, self.device), self.fixed

    def _compile(
        self,
        kind: str,
        m: int,
        levels: Mapping[str, Any],
        build: Callable[[tuple[str, ...]], Kernel],
        extra: Any = None,
    ) -> Kernel:
        """Compile with float factors traced, shared by all their levels; a
        kernel whose tracing needs their values is compiled per point, with
        every factor static. ``extra`` joins the cache key."""

        def attempt(dynamic: tuple[str, ...]) -> Kernel:
            """Build one kernel; errors other than needing a traced value are kept."""
            try:
                return build(dynamic)
            except _TRACE_NEEDS_VALUE:
                raise
            except KernelError as exc:
                return Kernel(error=exc)
            except Exception as exc:
                return Kernel(error=self._error(kind, m, levels, exc))

        floats = tuple(k for k, v in levels.items() if type(v) is float)
        static = tuple((k, levels[k]) for k in levels if k not in floats)
        shared: tuple[Any, ...] = (kind, m, static, extra)
        # one compile per kernel, whichever thread (ahead-of-time or not) asks
        with self.locks.setdefault(shared, threading.Lock()):
            kernel = self.cache.get(shared)
            if kernel is None and floats:
                try:
                    kernel = attempt(floats)
                except _TRACE_NEEDS_VALUE:
                    kernel = Kernel(per_point=True)
                self.cache[shared] = kernel
            if kernel is not None and not kernel.per_point:
                return kernel
            own = (kind, m, tuple(levels.items()), extra)
            kernel = self.cache.get(own)
            if kernel is None:
                try:
                    kernel = attempt(())
                except _TRACE_NEEDS_VALUE as exc:
                    kernel = Kernel(error=self._error(kind, m, levels, exc))
                self.cache[own] = kernel
            return kernel

    def _error(
        self, kind: str, m: int, levels: Mapping[str, Any], exc: BaseException
    ) -> KernelError:
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
        return KernelError(
            f"{what} at {describe(levels)} (tracing the jax kernel){advice}: "
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

    def data(self, levels: Mapping[str, Any]) -> Kernel:
        """The data kernel of a design point: (key words, args) -> block data."""
        study, width = self.study, self.study.vmap_width or 1

        def build(dynamic: tuple[str, ...]) -> Kernel:
            static = {k: v for k, v in levels.items() if k not in dynamic}
            kwargs = _injector(study.data_params, static, self.static_fixed)
            func: Callable[..., Any] = study.data_func  # type: ignore[assignment]

            def one(words: Any, dyn: Any, fixed: Any) -> Any:
                return func(**kwargs(words, dyn, fixed))

            fn = jax.vmap(one, in_axes=(0, None, None))
            words = jax.device_put(np.zeros((width, 2), np.uint32), self.device)
            lowered = self._lower(fn, words, *self.arguments(levels, dynamic))
            spec = lowered.out_info
            _check_memory(spec, self.device, width)
            return Kernel(lowered.compile(), dynamic, data_spec=spec)

        return self._compile("data", -1, levels, build)

    def method(self, m: int, levels: Mapping[str, Any], data: Kernel) -> Kernel:
        """The kernel of method ``m`` at a design point: (data, words, args) -> outputs."""
        study = self.study
        method = study.methods[m]

        def build(dynamic: tuple[str, ...]) -> Kernel:
            static = {k: v for k, v in levels.items() if k not in dynamic}
            kwargs = _injector(method.params, static, self.static_fixed)

            def one(x: Any, words: Any, dyn: Any, fixed: Any) -> Any:
                out = method.func(x, **kwargs(words, dyn, fixed))
                return dict(out) if isinstance(out, Mapping) else {"value": out}

            fn = jax.vmap(one, in_axes=(0, 0, None, None))
            width = study.vmap_width or 1
            words = jax.device_put(np.zeros((width, 2), np.uint32), self.device)
            lowered = self._lower(
                fn, data.data_spec, words, *self.arguments(levels, dynamic)
            )
            outputs = _output_specs(method.name, lowered.out_info, levels)
            return Kernel(lowered.compile(), dynamic, outputs)

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
            raise KernelError(problem)
        if not hasattr(spec, "shape") or np.dtype(spec.dtype).kind not in "biuf":
            got = getattr(spec, "dtype", type(spec).__name__)
            raise KernelError(
                f"method {method!r} output {name!r} is not numeric: got {got}."
            )
        shape = tuple(spec.shape[1:])
        if math.prod(shape) > MAX_OUTPUT_VALUES:
            raise KernelError(
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
        raise KernelError(
            f"a block of {width:,} replicates of the data takes {need / 2**20:,.0f} "
            f"MB, over a quarter of the {limit / 2**30:,.1f} GB of {dev}; lower "
            f"Study(vmap_width=...) to {fits:,} or less."
        )


_kernels: weakref.WeakKeyDictionary[Study, dict[str | None, Kernels]] = (
    weakref.WeakKeyDictionary()
)


def kernels_for(study: Study, platform: str | None) -> Kernels:
    per = _kernels.setdefault(study, {})
    ks = per.get(platform)
    if ks is None:
        ks = per[platform] = Kernels(study, platform)
    return ks
