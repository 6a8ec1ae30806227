"""The Study declaration and all load-time validation. Runs nothing."""

from __future__ import annotations

import copy
import hashlib
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, overload

import numpy as np

from simstudy.cube import MAX_REPLICATES
from simstudy.declare import fingerprint
from simstudy.declare.design import Design, design_of
from simstudy.declare.factors import RESERVED, Level
from simstudy.declare.methods import Method, measures_of, params_of, redeclared
from simstudy.errors import StudyError

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "BACKENDS",
    "SCHEMES",
    "BackendTraits",
    "Level",
    "Method",
    "Study",
]

SCHEMES = ("spawn", "pcg64-jump", "mt19937-jump")


@dataclass(frozen=True, slots=True)
class BackendTraits:
    """What a backend means for a declaration (the rest: ``simstudy.backends``)."""

    stream: str  # the parameter a task's stream is passed as
    vectorised: bool  # kernels over blocks of replicates: vmap_width applies
    # numpy stores predate backends: their fingerprint names none
    fingerprinted: bool


BACKENDS = {
    "numpy": BackendTraits("rng", vectorised=False, fingerprinted=False),
    "jax": BackendTraits("key", vectorised=True, fingerprinted=True),
}
DEFAULT_VMAP_WIDTH = 1024  # lanes of every jax kernel (numbers depend on it)
MAX_VMAP_WIDTH = 8192  # a store chunk's replicates: one kernel call per chunk at most
Truth = float | list[Any]  # one number, or nested lists for an array output


def _array_hash(value: Any) -> str:
    """Hash a fixed input by content."""
    arr = np.asarray(value)
    if arr.dtype == object:
        import pickle

        data = pickle.dumps(value)
    else:
        data = arr.dtype.str.encode() + repr(arr.shape).encode() + arr.tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _vmap_width(backend: str, width: Any, scheme: Any) -> int | None:
    """Check the jax-only options; return the kernel width (None for numpy)."""
    if not BACKENDS[backend].vectorised:
        if width is not None:
            raise StudyError(
                f"vmap_width={width!r} applies to backend='jax' only.",
                hint='drop vmap_width, or declare Study(..., backend="jax")',
            )
        return None
    if scheme != "spawn":
        raise StudyError(
            f"backend='jax' takes its keys from the spawn scheme, not {scheme!r} "
            "(the jump schemes are numpy bit generators).",
            hint='drop rng=... (rng="spawn" is the default)',
        )
    if width is None:
        return DEFAULT_VMAP_WIDTH
    if (
        isinstance(width, bool)
        or not isinstance(width, numbers.Integral)
        or not 1 <= int(width) <= MAX_VMAP_WIDTH
        or int(width) & (int(width) - 1)
    ):
        raise StudyError(
            f"vmap_width must be a power of two from 1 to {MAX_VMAP_WIDTH}, "
            f"got {width!r}.",
            hint=f"drop it for the default {DEFAULT_VMAP_WIDTH}, or write e.g. "
            "vmap_width=4096",
        )
    return int(width)


def _scheme(scheme: Any) -> str:
    """Check a stream scheme's name; return it."""
    if scheme not in SCHEMES:
        raise StudyError(
            f"rng scheme {scheme!r} is unknown; expected one of {list(SCHEMES)}.",
            hint='use rng="spawn" unless you need the jump recipe',
        )
    name: str = scheme
    return name


def _unchecked(*values: Any) -> Any:
    """Return values typed as Any, for validation of user input."""
    return values


class MethodOptions(TypedDict, total=False):
    """The keywords of ``@study.method(...)``: which outputs summaries read."""

    name: str | None
    estimate: str | None
    se: str | None
    ci: tuple[str, str] | None
    p: str | None
    fallback: str | None


class Study:
    """A simulation study: factors x replicates x methods, with a seed.

    Parameters
    ----------
    name : str
        The study's name.
    factors : dict of str -> list
        Factor name -> levels (int, float, str or bool). The design points are
        the Cartesian product of the levels, first factor slowest. A tuple
        key names factors that vary together: ``{("n1", "n2"): [(10, 10),
        (10, 40)], "vr": [1.0, 4.0]}`` crosses the two pairs with ``vr``.
    where : callable, optional
        A predicate over factor values, asking for factors by name like a
        data function (``where=lambda n1, n2: n1 <= n2``): only the design
        points where it is true are computed, counted and summarised. The
        cube keeps one dimension per factor; ``open_results`` marks the
        points in the design (``in_design``). See docs/tutorial.md.
    replicates : int
        Replicates per design point (>= 1).
    seed : int
        Non-negative integer seed of every stream.
    rng : {"spawn", "pcg64-jump", "mt19937-jump"}
        The stream scheme; see docs/streams.md.
    backend : {"numpy", "jax"}
        ``"numpy"``: data functions and methods take ``rng`` (a numpy
        Generator) and run one task at a time. ``"jax"``: they take ``key``
        (a JAX PRNG key), are written in ``jax.numpy``, and run jitted and
        vmapped over blocks of replicates; see docs/jax.md.
    vmap_width : int, optional
        jax backend only: the lanes of every compiled kernel (a power of two
        up to 8192; default 1024). Numbers depend on it at float rounding
        level, so it is part of the fingerprint.

    Raises
    ------
    StudyError
        On any invalid argument, with one clear message.

    Examples
    --------
    >>> study = Study("demo", factors={"n": [10, 20]}, replicates=5, seed=1)
    >>> @study.data
    ... def normal(rng, n):
    ...     return rng.standard_normal(n)
    >>> @study.method
    ... def mean(x):
    ...     return {"estimate": x.mean()}
    >>> study.n_tasks
    10
    """

    def __init__(
        self,
        name: str,
        *,
        factors: Mapping[Any, Sequence[Any]] | None = None,
        replicates: int,
        seed: int,
        rng: str = "spawn",
        backend: str = "numpy",
        vmap_width: int | None = None,
        where: Callable[..., Any] | None = None,
    ) -> None:
        # user input: check types at run time whatever the annotations say
        name_, replicates_, seed_, rng_ = _unchecked(name, replicates, seed, rng)
        backend_, width_ = _unchecked(backend, vmap_width)
        if not isinstance(name_, str) or not name_.strip():
            raise StudyError(
                f"study name must be a non-empty string, got {name_!r}.",
                hint='write Study("my_study", ...)',
            )
        self.name: str = name_
        self.design: Design = design_of(factors, where)
        if isinstance(replicates_, bool) or not isinstance(
            replicates_, numbers.Integral
        ):
            raise StudyError(
                f"replicates must be an integer >= 1, got {replicates_!r}.",
                hint="write replicates=1000",
            )
        if replicates_ < 1:
            raise StudyError(
                f"replicates must be >= 1, got {replicates_!r}.",
                hint="write replicates=1000",
            )
        if int(replicates_) > MAX_REPLICATES:
            raise StudyError(
                f"replicates must be <= {MAX_REPLICATES:,}, got {replicates_!r}.",
                hint="split the study: several stores of fewer replicates each",
            )
        self.replicates: int = int(replicates_)
        if (
            isinstance(seed_, bool)
            or not isinstance(seed_, numbers.Integral)
            or seed_ < 0
        ):
            raise StudyError(
                f"seed must be a non-negative integer, got {seed_!r}.",
                hint="write seed=2026 (any fixed non-negative integer)",
            )
        self.seed: int = int(seed_)
        self.scheme: str = _scheme(rng_)
        if backend_ not in BACKENDS:
            raise StudyError(
                f"backend {backend_!r} is unknown; expected one of {list(BACKENDS)}.",
                hint='use backend="numpy" (the default) or backend="jax"',
            )
        self.backend: str = backend_
        self.vmap_width: int | None = _vmap_width(backend_, width_, rng_)
        self.fixed_inputs: dict[str, Any] = {}
        self.data_func: Callable[..., Any] | None = None
        self.data_params: tuple[str, ...] = ()
        self.methods: list[Method] = []
        self.truth_values: dict[str, Truth] | Callable[..., Any] | None = None
        self.source_file: str | None = None

    # ---- declaration -------------------------------------------------
    def fixed(self, **inputs: Any) -> None:
        """Declare large fixed inputs, injected by name like factors."""
        for name, value in inputs.items():
            if name in RESERVED or name in self.factors:
                raise StudyError(
                    f"fixed input {name!r} clashes with a factor or reserved name.",
                    hint="give the fixed input another name",
                )
            self.fixed_inputs[name] = value

    def data(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Register the data function: ``f(rng, **factors) -> data``."""
        if self.data_func is not None and not redeclared(
            "data function", self.data_func.__name__, func.__name__
        ):
            raise StudyError(
                f"a second data function {func.__name__!r} was declared "
                f"(first: {self.data_func.__name__!r}); a study has exactly one.",
                hint="remove one of the @study.data functions",
            )
        self.data_params = params_of(func, skip_first=False, what="data function")
        self.data_func = func
        return func

    @overload
    def method(self, func: Callable[..., Any], /) -> Callable[..., Any]: ...
    @overload
    def method(
        self, func: None = None, /, **outputs: Unpack[MethodOptions]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...
    def method(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        estimate: str | None = None,
        se: str | None = None,
        ci: tuple[str, str] | None = None,
        p: str | None = None,
        fallback: str | None = None,
    ) -> Any:
        """Register a method: ``f(data, [rng], [factors...]) -> {output: value}``.

        ``estimate``, ``se``, ``ci=(lo, hi)`` and ``p`` name the outputs that
        ``simstudy summarize`` reads for this method (default estimate:
        ``"estimate"``, or ``"value"`` for a method returning a bare number).
        ``fallback`` names another method: with ``cases="fallback"``, where
        this method gives no result, summaries use the fallback's values in
        the same replicate (from the cube; nothing is recomputed).
        """
        measures = measures_of(name, estimate=estimate, se=se, ci=ci, p=p)
        given: Any = fallback  # from the user: any type
        if given is not None:
            if not isinstance(given, str) or not given:
                raise StudyError(
                    f"@study.method: fallback= must name another method, got "
                    f"{fallback!r}.",
                    hint='write e.g. @study.method(fallback="ols")',
                )
            measures["fallback"] = fallback

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            mname: Any = function.__name__ if name is None else name
            if not isinstance(mname, str) or not mname:
                raise StudyError(
                    f"method name must be a non-empty string, got {mname!r}.",
                    hint='write @study.method(name="median")',
                )
            same = [i for i, m in enumerate(self.methods) if m.name == mname]
            if same and not redeclared("method", mname, mname):
                raise StudyError(
                    f"method {mname!r} is declared twice; method names must be "
                    "distinct.",
                    hint='rename one, e.g. @study.method(name="median2")',
                )
            params = params_of(function, skip_first=True, what=f"method {mname!r}")
            method = Method(mname, function, params, measures)
            if same:  # an edit typed again in a notebook: same place, new code
                self.methods[same[0]] = method
            else:
                self.methods.append(method)
            return function

        if func is not None:
            return register(func)
        return register

    def truth(self, func: Callable[..., Any] | None = None, /, **values: Any) -> Any:
        """Declare the true values: ``study.truth(estimate=0.0)`` or a decorator."""
        if func is not None:
            params_of(func, skip_first=False, what="truth function")
            self.truth_values = func
            return func
        self.truth_values = {k: _truth_value(k, v) for k, v in values.items()}
        return None

    # ---- checks ------------------------------------------------------
    @property
    def stream_param(self) -> str:
        """The parameter that receives a task's stream: ``rng`` or ``key``."""
        return BACKENDS[self.backend].stream

    def validate(self) -> None:
        """Check the finished declaration; raise StudyError on the first problem."""
        if self.data_func is None:
            raise StudyError(
                f"study {self.name!r} has no data function.",
                hint="decorate a function with @study.data",
            )
        if not self.methods:
            raise StudyError(
                f"study {self.name!r} has no method.",
                hint="decorate at least one function with @study.method",
            )
        known = {self.stream_param, *self.factors, *self.fixed_inputs}
        self._check_params(
            self.data_func,
            self.data_params,
            known,
            f"data function {self.data_func.__name__!r}",
        )
        for m in self.methods:
            self._check_params(m.func, m.params, known, f"method {m.name!r}")
        self._check_fallbacks()
        if callable(self.truth_values):
            params = params_of(self.truth_values, skip_first=False, what="truth")
            self._check_params(
                self.truth_values,
                params,
                set(self.factors),
                f"truth function {getattr(self.truth_values, '__name__', '?')!r}",
            )
        if self.truth_values is not None:
            _check_truth(self)

    def _check_fallbacks(self) -> None:
        """A declared fallback is another method of the study."""
        names = self.method_names
        for m in self.methods:
            fallback = m.measures.get("fallback")
            if fallback is None:
                continue
            if fallback == m.name or fallback not in names:
                itself = fallback == m.name
                raise StudyError(
                    f"method {m.name!r} declares fallback={fallback!r}, which is "
                    + ("the method itself" if itself else "no method of the study")
                    + f"; methods: {', '.join(names)}.",
                    hint="name another method as its fallback",
                )

    def _check_params(
        self,
        func: Callable[..., Any],
        params: tuple[str, ...],
        known: set[str],
        what: str,
    ) -> None:
        sig = inspect.signature(func).parameters
        other = {"rng": "key", "key": "rng"}[self.stream_param]
        if other in params:  # reserved: never a factor or fixed input
            if BACKENDS[self.backend].vectorised:
                raise StudyError(
                    f"{what} asks for 'rng', but study {self.name!r} uses "
                    "backend='jax', whose functions take 'key' (a JAX PRNG key).",
                    hint="rename the parameter to key and draw with jax.random",
                )
            raise StudyError(
                f"{what} asks for 'key', which only backend='jax' studies give.",
                hint='take rng (a numpy Generator), or declare Study(..., backend="jax")',
            )
        for p in params:
            if p not in known and sig[p].default is inspect.Parameter.empty:
                raise StudyError(
                    f"{what} asks for parameter "
                    f"{p!r}, which is not a factor, fixed input or "
                    f"{self.stream_param!r}; "
                    f"known names: {sorted(known)}.",
                    hint="rename the parameter to a factor name or give it a default",
                )

    def derive(
        self, *, replicates: int | None = None, scheme: str | None = None
    ) -> Study:
        """Return a copy with another replicate count or stream scheme.

        A run that overrides either (``--replicates``, ``--rng``) works on
        such a copy: the study object the user holds is never changed.
        """
        new = copy.copy(self)
        new.methods = list(self.methods)
        new.fixed_inputs = dict(self.fixed_inputs)
        if replicates is not None:
            new.replicates = int(replicates)
        if scheme is not None:
            new.scheme = _scheme(scheme)
        return new

    def with_levels(self, factors: Mapping[str, Sequence[Level]]) -> Study:
        """Return a copy whose factors take ``factors``' levels (the same
        names): its design is their full cross, less what ``where=`` drops.
        ``simstudy solve`` evaluates new levels of a factor on such a copy."""
        new = self.derive()
        new.design = design_of(
            {name: list(levels) for name, levels in factors.items()},
            self.design.where,
        )
        return new

    # ---- derived -----------------------------------------------------
    @property
    def factors(self) -> dict[str, tuple[Level, ...]]:
        """Each factor's levels (the design's; tied factors one by one)."""
        return self.design.factors

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    @property
    def first_point(self) -> dict[str, Level]:
        """The first design point in grid order."""
        return dict(zip(self.factors, self.design.points[0], strict=True))

    @property
    def n_points(self) -> int:
        """Design points: the full cross, or the part ``where=`` keeps."""
        return len(self.design.points)

    @property
    def n_tasks(self) -> int:
        return self.n_points * self.replicates * len(self.methods)

    def truth_for(self, point: Mapping[str, Level]) -> dict[str, Truth]:
        """Return the true values at one design point (empty if none declared)."""
        if self.truth_values is None:
            return {}
        if callable(self.truth_values):
            params = inspect.signature(self.truth_values).parameters
            out = self.truth_values(**{k: v for k, v in point.items() if k in params})
            return {k: _truth_value(k, v) for k, v in dict(out).items()}
        return dict(self.truth_values)

    def fingerprint(self) -> dict[str, Any]:
        """Return what identifies the numbers this study makes (JSON-able).

        ``methods`` and ``data`` hash each function with all of the user's
        code it reaches (``simstudy.declare.fingerprint``); ``reach`` keeps the parts,
        so a changed fingerprint can say what changed.
        """
        assert self.data_func is not None
        data = fingerprint.reach(self.data_func, self.fixed_inputs)
        methods = {
            m.name: fingerprint.reach(m.func, self.fixed_inputs) for m in self.methods
        }
        out: dict[str, Any] = {
            "version": 2,
            "seed": self.seed,
            "scheme": self.scheme,
            "factors": {k: list(v) for k, v in self.factors.items()},
            **({"design": self.design.digest()} if not self.design.full else {}),
            "replicates": self.replicates,
            "methods": {name: fingerprint.digest(p) for name, p in methods.items()},
            "data": fingerprint.digest(data),
            "fixed": {k: _array_hash(v) for k, v in sorted(self.fixed_inputs.items())},
            "reach": {"data": data, "methods": methods},
        }
        if BACKENDS[self.backend].fingerprinted:
            out["backend"] = {"name": self.backend, "vmap_width": self.vmap_width}
        return out

    def legacy_hashes(self) -> dict[str, Any]:
        """The function hashes of format-1 fingerprints (the raw source)."""
        assert self.data_func is not None
        return {
            "methods": {m.name: fingerprint.legacy_hash(m.func) for m in self.methods},
            "data": fingerprint.legacy_hash(self.data_func),
        }

    def __repr__(self) -> str:
        return (
            f"Study({self.name!r}, factors={dict(self.factors)!r}, "
            f"replicates={self.replicates}, seed={self.seed}, rng={self.scheme!r}, "
            + (
                f"backend={self.backend!r}, "
                if BACKENDS[self.backend].fingerprinted
                else ""
            )
            + f"methods={self.method_names!r})"
        )


def _truth_value(key: str, value: Any) -> Truth:
    """A true value as stored: a float, or nested lists of floats for an
    array output (compared element by element with it)."""
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim == 0 or array.size == 0 or isinstance(value, str):
        raise StudyError(
            f"truth {key}={value!r} is not a number or an array of numbers.",
            hint="use @study.truth on a function for point-dependent truths",
        )
    out: list[Any] = array.tolist()
    return out


def _check_truth(study: Study) -> None:
    """A truth names an estimate a method declares (``estimate=``, else
    the default ``estimate`` or ``value``): anything else is refused."""
    estimates: set[str] = set()
    for m in study.methods:
        name = m.measures.get("estimate")
        estimates |= {name} if name else {"estimate", "value"}
    first = study.first_point
    try:
        keys = list(study.truth_for(first))
    except Exception as exc:
        raise StudyError(
            f"the truth function raised {type(exc).__name__}: {exc} (at {first}).",
            hint="it must return {output: number} for every design point",
        ) from exc
    for key in keys:
        if key not in estimates:
            raise StudyError(
                f"study.truth names {key!r}, which is no method's estimate; "
                f"estimates: {sorted(estimates)}.",
                hint=f"key the truth by the estimate's output, or declare "
                f'@study.method(estimate="{key}") on the methods returning it',
            )
