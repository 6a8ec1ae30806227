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

The kernels themselves (compiling, tracing factors) are in
``simstudy.backends.kernels``; this module runs them over a batch's blocks.

Keys: lane ``r`` of the data kernel gets
``wrap_key_data(SeedSequence(seed, spawn_key=(point_key, r)).generate_state(2,
np.uint32), impl="threefry2x32")``, a method taking ``key`` the same with
``spawn_key=(point_key, r, method_key)`` (DESIGN §2), derived vectorised for a
whole block.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from simstudy.backends import Cell, Placement, Work
from simstudy.backends.kernels import (
    THREEFRY_PARTITIONABLE,
    Kernel,
    KernelError,
    describe,
    devices,
    jax_device,
    kernels_for,
)
from simstudy.backends.numpy import kwargs_of
from simstudy.cube import FAILED, OK
from simstudy.declare.grid import Batch
from simstudy.declare.outputs import (
    OutputError,
    OutputSpecs,
    keys_problem,
    shape_problem,
)
from simstudy.declare.results import BatchResult, Failure, failure, worker_name
from simstudy.declare.study import Study
from simstudy.errors import UsageError
from simstudy.rng import streams

__all__ = [
    "BACKEND",
    "devices",
    "jax_device",
    "kernels_for",
    "replay_cell",
    "run_jax_batch",
    "use_compilation_cache",
]


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

    def _method_kernel(self, j: int, specs: OutputSpecs) -> Kernel | None:
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
            args = self.args[dynamic] = self.ks.arguments(self.levels, dynamic)
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
        where = describe(self.levels)
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
        """Store a block's outputs of method ``j``, NaN and inf as they came
        (docs/tutorial.md, "NaN and inf")."""
        b, k = self.status.shape
        for name, arr in host.items():
            if name not in self.rows:
                self.rows[name] = np.full((b, k, *arr.shape[1:]), np.nan)
            self.rows[name][rows, j] = arr
        self.status[rows, j] = OK


def _spec_error(method: str, kern: Kernel, specs: OutputSpecs) -> KernelError | None:
    """Check a kernel's outputs against those the method's first tasks had."""
    assert kern.outputs is not None
    names = tuple(sorted(kern.outputs))
    problem = keys_problem(
        method, names, specs.names.get(method), "its first successful task"
    )
    for name, (shape, _) in kern.outputs.items():
        problem = problem or shape_problem(
            method, name, shape, specs.shapes.get(name), "the first task"
        )
    return None if problem is None else KernelError(problem)


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

    def check(self, study: Study, where: Placement) -> None:
        scheduler, device = where.scheduler, where.device
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
        if where.task_timeout is not None:
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

    def provenance(self, study: Study, where: Placement) -> dict[str, str]:
        """The device kind and x64 setting (recorded; a change triggers a
        recheck of finished tasks), besides the jax and jaxlib versions."""
        if where.scheduler == "jax":
            return devices(where.device)
        on = f"dask workers ({where.device or 'default'})"
        return {**devices(), "jax-device": on}

    def prepare(self, study: Study, work: Work, device: str | None) -> None:
        kernels_for(study, device).prepare(work)


BACKEND = JaxBackend()
