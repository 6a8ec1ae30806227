"""``simstudy protocol``: an ADEMP protocol written from a study file.

Aims, data-generating mechanisms, estimands, methods and performance
measures (Morris, White & Crowther 2019), the replication count with the
Monte Carlo SEs it is expected to give (from a short pilot of the real
tasks), the seed and stream scheme, failure handling and software versions;
last, a machine-readable block with the study's fingerprint (the one a
store keeps and a resume compares; ``deviations``), so what was run can be
compared with what was registered. Nothing is written but the protocol.
"""

# ruff: noqa: RUF001  (the formulas are written in Unicode math on purpose)
from __future__ import annotations

import datetime
import hashlib
import html
import inspect
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.analysis.measures import Measure
from simstudy.analysis.registry import BUILTINS, BY_NAME
from simstudy.atomic import check_target, write_text
from simstudy.backends import backend_of
from simstudy.cube import OK
from simstudy.declare import deviations
from simstudy.declare.grid import Batch, points
from simstudy.declare.loader import study_imports
from simstudy.declare.study import Study
from simstudy.errors import UsageError

__all__ = [
    "Protocol",
    "build",
    "compare",
    "packages",
    "record_of",
    "write",
]

PILOT_POINTS = 50  # design points a pilot runs, spread over a larger grid
NOMINAL = 0.95  # the coverage the expected MCSE of coverage is given at


@dataclass
class Protocol:
    """A protocol: its Markdown text and the record its last block holds."""

    markdown: str
    record: dict[str, Any]

    def html(self) -> str:
        """The protocol as a self-contained HTML page (the text in <pre>
        blocks by section; the record readable by ``read_protocol``)."""
        body = self.markdown.split(f"```json {deviations.MARKER}")[0]
        parts = []
        for block in re.split(r"\n(?=## )", body):
            head, _, rest = block.partition("\n")
            level = "h1" if head.startswith("# ") else "h2"
            parts.append(
                f"<{level}>{html.escape(head.lstrip('# '))}</{level}>"
                f"<pre style='white-space:pre-wrap'>{html.escape(rest)}</pre>"
            )
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>"
            f"protocol: {html.escape(self.record['study'])}</title></head><body>"
            + "".join(parts)
            + deviations.block_html(self.record)
            + "</body></html>"
        )


def record_of(study: Study) -> dict[str, Any]:
    """The machine-readable part: fingerprint and declarations."""
    from simstudy.store.store import declared_of

    declared = declared_of(study)
    return {
        "format": deviations.FORMAT,
        "study": study.name,
        "study_file": Path(study.source_file).name if study.source_file else None,
        "fingerprint": study.fingerprint(),
        "declared": {k: declared[k] for k in ("truth", "measures")},
    }


def packages(study: Study) -> dict[str, str]:
    """The installed distributions the study file imports, with versions."""
    mods = study_imports(study.source_file)
    found = metadata.packages_distributions()
    out = {}
    for top in dict.fromkeys(m.split(".")[0] for m in mods):
        for dist in found.get(top, []):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def _where(func: Any, base: Path | None) -> str:
    """``file.py:LINE`` of a function (relative to the study's folder)."""
    try:
        path = Path(inspect.getsourcefile(func) or "")
        line = inspect.getsourcelines(func)[1]
    except (OSError, TypeError):
        return "(source not available)"
    shown = path.name
    if base is not None and path.is_relative_to(base):
        shown = str(path.relative_to(base))
    return f"{shown}:{line}"


def _source(func: Any) -> str:
    try:
        return inspect.getsource(func).rstrip()
    except (OSError, TypeError):
        return "(source not available)"


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if getattr(obj, "__doc__", None) else ""


def _estimate_name(study: Study, m: int, outputs: Mapping[str, Any]) -> str | None:
    declared = study.methods[m].measures.get("estimate")
    for name in (declared, "estimate", "value"):
        if name is not None and name in outputs:
            return str(name)
    return None


def _pilot(study: Study, replicates: int) -> dict[str, Any]:
    """Run ``replicates`` replicates of (a spread of) the design points here;
    the SD of each method's estimate per point, and the outputs' shapes."""
    backend = backend_of(study)
    grid = points(study)
    n = len(grid)
    picked = (
        list(range(n))
        if n <= PILOT_POINTS
        else sorted({int(i) for i in np.linspace(0, n - 1, PILOT_POINTS)})
    )
    count = min(replicates, study.replicates)
    every = tuple(range(len(study.methods)))
    spreads: dict[str, list[float]] = {m.name: [] for m in study.methods}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {m.name: {} for m in study.methods}
    failed = {m.name: 0 for m in study.methods}
    for p in picked:
        batch = Batch(p, tuple(grid[p].items()), 0, count, every)
        result = backend.run_batch(study, batch)
        for j, method in enumerate(study.methods):
            ok = result.status[:, j] == OK
            failed[method.name] += int((~ok).sum())
            for name in result.keys.get(method.name, ()):
                shapes[method.name][name] = tuple(result.outputs[name].shape[2:])
            est = _estimate_name(study, j, shapes[method.name])
            if est is None or ok.sum() < 2:
                continue
            values = result.outputs[est][ok, j].astype(float)
            if values.ndim == 1:
                spreads[method.name].append(float(np.nanstd(values, ddof=1)))
    return {
        "replicates": count,
        "points": len(picked),
        "sd": spreads,
        "shapes": shapes,
        "failed": failed,
    }


def _measures_for(study: Study) -> list[Measure]:
    """The measures a run may aim at (``--target-mcse``) whose outputs the
    study declares: an SE gives Wald intervals and tests too, as in
    ``summarize``; relative bias needs a nonzero truth somewhere."""
    given: set[str] = {
        k for m in study.methods for k in ("se", "ci", "p") if k in m.measures
    }
    if "se" in given:
        given |= {"ci", "p"}
    if study.truth_values is not None:
        given.add("truth")
    listed = [m for m in BUILTINS if m.target and set(m.needs) <= given]
    if "truth" in given and not any(
        v != 0 for p in points(study) for v in study.truth_for(p).values()
    ):
        listed.remove(BY_NAME["relbias"])  # relative to a truth of 0: undefined
    return listed


def _needed(sd: float, target: float, measure: str) -> int:
    if measure in ("empse",):
        return math.ceil(sd**2 / (2 * target**2)) + 1
    if measure in ("coverage", "becoverage"):
        return math.ceil(NOMINAL * (1 - NOMINAL) / target**2)
    return math.ceil(sd**2 / target**2)


def build(
    study: Study,
    *,
    pilot: int = 50,
    targets: Mapping[str, float] | None = None,
    aims: str | None = None,
) -> Protocol:
    """Write the protocol of ``study`` (a pilot of ``pilot`` replicates per
    design point runs here; nothing is stored)."""
    if pilot < 2:
        raise UsageError(f"--pilot must be >= 2, got {pilot}.", hint="write --pilot 50")
    record = record_of(study)
    base = Path(study.source_file).parent if study.source_file else None
    module = sys.modules.get(getattr(study.data_func, "__module__", "") or "")
    aims = (
        aims
        or _doc(module)
        or "(not stated: write the aims as the study file's docstring)"
    )
    run = _pilot(study, pilot)
    fingerprint = record["fingerprint"]
    sha = ""
    if study.source_file:
        sha = hashlib.sha256(Path(study.source_file).read_bytes()).hexdigest()
    from simstudy.store.meta import versions

    soft = {**versions(), **packages(study)}
    record["versions"] = soft
    lines = [
        f"# Protocol: simulation study *{study.name}*",
        "",
        (
            f"Written by simstudy {soft.get('simstudy', '?')} on "
            f"{datetime.date.today().isoformat()} from `{record['study_file']}` "
            f"(sha256 `{sha[:16]}`), before any result was seen. Structure: ADEMP "
            "(Morris, White & Crowther 2019, Stat Med 38:2074)."
        ),
        "",
        "## Aims",
        "",
        aims,
        "",
        *_dgm(study, base),
        *_estimands(study),
        *_methods(study, base, run),
        *_measures(study),
        *_replicates(study, run, targets),
        *_streams(study),
        *_failures(study, run),
        "## Software",
        "",
        *(f"- {k}: {v}" for k, v in soft.items()),
        "",
        "## Fingerprint",
        "",
        f"Study fingerprint: data `{fingerprint['data']}`; methods "
        + ", ".join(f"{m} `{h}`" for m, h in fingerprint["methods"].items())
        + ". The block below is what `run --protocol` registers and `report` "
        "compares with the store (docs/share.md); keep it as it is.",
        "",
        deviations.block_markdown(record),
    ]
    return Protocol("\n".join(lines), record)


def _dgm(study: Study, base: Path | None) -> list[str]:
    grid = points(study)
    sizes = " × ".join(str(len(v)) for v in study.factors.values()) or "1"
    out = [
        "## Data-generating mechanisms",
        "",
        f"{len(grid)} design point(s) ({sizes}, full factorial, first factor slowest):",
        "",
        "| factor | levels |",
        "|---|---|",
        *(f"| {f} | {', '.join(map(repr, v))} |" for f, v in study.factors.items()),
        "",
    ]
    for name, value in study.fixed_inputs.items():
        arr = np.asarray(value)
        out.append(f"- fixed input `{name}`: {arr.dtype} {arr.shape}")
    data_func = study.data_func
    out += [
        f"Data function `{getattr(data_func, '__name__', '?')}` "
        f"({_where(data_func, base)}):"
        + (f" {_doc(data_func)}" if _doc(data_func) else ""),
        "",
        "```python",
        _source(data_func),
        "```",
        "",
    ]
    return out


def _estimands(study: Study) -> list[str]:
    out = ["## Estimands and truths", ""]
    truth = study.truth_values
    if truth is None:
        return [*out, "No truth declared: measures that need one are not computed.", ""]
    if callable(truth):
        out += [
            f"Truth function `{getattr(truth, '__name__', '?')}`:",
            "",
            "```python",
            _source(truth),
            "```",
            "",
        ]
    grid = points(study)
    values = [study.truth_for(p) for p in grid]
    if all(v == values[0] for v in values):
        shown_truth = ", ".join(f"`{k}` = {v!r}" for k, v in values[0].items())
        return [*out, f"At every design point: {shown_truth}.", ""]
    shown = grid[:12]
    out += ["| design point | truth |", "|---|---|"]
    for point in shown:
        cell = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "all"
        out.append(f"| {cell} | {study.truth_for(point)} |")
    if len(grid) > len(shown):
        out.append(f"| … {len(grid) - len(shown)} more | |")
    return [*out, ""]


def _methods(study: Study, base: Path | None, run: dict[str, Any]) -> list[str]:
    out = ["## Methods", ""]
    for m in study.methods:
        shapes = run["shapes"][m.name]
        outs = (
            ", ".join(
                f"`{k}`" + (f" {v}" if v else "") for k, v in sorted(shapes.items())
            )
            or "(none in the pilot: every pilot task failed)"
        )
        roles = ", ".join(f"{k}={v}" for k, v in m.measures.items())
        out += [
            f"### {m.name}",
            "",
            f"`{m.func.__name__}` ({_where(m.func, base)})"
            + (f": {_doc(m.func)}" if _doc(m.func) else ""),
            f"- outputs: {outs}" + (f"; declared: {roles}" if roles else ""),
            f"- own random stream: {'yes' if m.takes_rng or m.takes_key else 'no'}",
            "",
        ]
    return out


def _measures(study: Study) -> list[str]:
    out = [
        "## Performance measures",
        "",
        (
            "Each with its Monte Carlo SE over the n ok replicates of a design point "
            "and method (s: SD of the estimates; formulas and notation: "
            "[docs/analysis.md](docs/analysis.md))."
        ),
        "",
        "| name | measure | estimate | MCSE |",
        "|---|---|---|---|",
    ]
    for measure in _measures_for(study):
        what, est, mcse = measure.formula or ("", "", "")
        out.append(f"| `{measure.name}` | {what} | {est} | {mcse} |")
    return [*out, ""]


def _replicates(
    study: Study, run: dict[str, Any], targets: Mapping[str, float] | None
) -> list[str]:
    replicates = study.replicates
    out = [
        "## Number of replicates",
        "",
        (
            f"{replicates:,} replicates per design point. Justification: a pilot "
            f"of {run['replicates']} replicates at {run['points']} design point(s) "
            "gave the SD s of each method's estimate; the expected Monte Carlo SEs "
            f"at {replicates:,} replicates, at the design point where they are "
            "largest, are:"
        ),
        "",
    ]
    head = (
        "| method | pilot s (max) | MCSE(bias) | MCSE(empse) | MCSE(coverage at 0.95) |"
    )
    goals = dict(targets or {})
    for measure, goal in goals.items():
        head += f" replicates for MCSE({measure}) <= {goal:g} |"
    out += [head, "|---" * (head.count("|") - 1) + "|"]
    for name, sds in run["sd"].items():
        if not sds:
            out.append(f"| {name} | (no scalar estimate) | | | |")
            continue
        sd = max(sds)
        row = (
            f"| {name} | {sd:.4g} | {sd / math.sqrt(replicates):.3g} | "
            f"{sd / math.sqrt(2 * max(replicates - 1, 1)):.3g} | "
            f"{math.sqrt(NOMINAL * (1 - NOMINAL) / replicates):.3g} |"
        )
        for measure, goal in goals.items():
            row += f" {_needed(sd, goal, measure):,} |"
        out.append(row)
    out.append("")
    if goals:
        spec = ",".join(f"{k}={v:g}" for k, v in goals.items())
        out += [
            (
                f"The run uses `--target-mcse {spec}`: replicates in rounds, the "
                f"first of {replicates:,}, until every method's MCSE is at most the "
                "target at each design point."
            ),
            "",
        ]
    return out


def _streams(study: Study) -> list[str]:
    return [
        "## Random numbers",
        "",
        f"Seed {study.seed}, scheme `{study.scheme}`, backend `{study.backend}`"
        + (f" (vmap width {study.vmap_width})" if study.vmap_width else "")
        + ". "
        + (
            "Every data set is generated from its own stream, "
            "`SeedSequence(seed, spawn_key=(point_key, replicate))`, and a "
            "method taking `rng` from `spawn_key=(point_key, replicate, "
            "method_key)` (keys: blake2b of the JSON of the design point and of "
            "the method name). Every method sees the same data in a replicate "
            "(common random numbers); adding replicates, levels or methods "
            "changes no existing number."
            if study.scheme == "spawn"
            else "Streams are positional jumps of one generator: extending the "
            "design renumbers them."
        )
        + " Recipe: [docs/streams.md](docs/streams.md).",
        "",
    ]


def _failures(study: Study, run: dict[str, Any]) -> list[str]:
    failed = {m: n for m, n in run["failed"].items() if n}
    seen = (
        "; in the pilot: " + ", ".join(f"{m} {n}" for m, n in failed.items())
        if failed
        else "; no pilot task failed"
    )
    return [
        "## Failure handling",
        "",
        (
            "A task that raises is recorded (status failed, exception, message, "
            "traceback) and the study goes on; a method whose first 50 tasks all "
            "fail stops the run. Measures use each method's ok replicates "
            "(available cases; `--cases complete` uses only replicates where every "
            f"method is ok) and report `failure_rate` with its MCSE{seen}. Warnings "
            "are counted per task (`warning_rate`)."
        ),
        "",
    ]


def write(protocol: Protocol, path: str | os.PathLike[str]) -> Path:
    """Write a protocol as Markdown, or as HTML for a ``.html`` path."""
    target = check_target(path)
    text = protocol.html() if target.suffix in (".html", ".htm") else protocol.markdown
    return write_text(target, text)  # whole or not at all


def compare(study: Study, path: str | os.PathLike[str]) -> list[str]:
    """The deviations of ``study`` (as it is now) from a registered protocol."""
    registered = deviations.read_protocol(path)
    return deviations.deviations(registered["record"], record_of(study))
