"""A registered protocol against what was run: the deviations, listed.

A protocol (``python -m simstudy protocol``) ends with a machine-readable
block: the study's fingerprint (the one a store keeps and a resume
compares, ``Study.fingerprint``) and its declarations (truth, measure
outputs). ``read_protocol`` finds that block in a protocol file (Markdown or
HTML); ``deviations`` compares it with a store's or a study's fingerprint
and says, one line each, what changed: seed, scheme, backend, design points,
replicates, methods, the code of the data function, of a method or of
anything of the user's they use (a helper function, a module constant, a
local module), fixed inputs, truths, declared measure outputs, and stored
results hidden from the measures.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path
from typing import Any

from simstudy.declare import fingerprint
from simstudy.errors import UsageError

__all__ = [
    "FORMAT",
    "MARKER",
    "block_html",
    "block_markdown",
    "deviations",
    "from_store_meta",
    "read_protocol",
]

FORMAT = 1  # the protocol block's format
MARKER = "simstudy-protocol"  # the fence's info string / the <pre>'s id
_FENCE = re.compile(r"```json " + MARKER + r"\n(.*?)\n```", re.DOTALL)
_PRE = re.compile(r"<pre id=" + MARKER + r">(.*?)</pre>", re.DOTALL)


def block_markdown(record: dict[str, Any]) -> str:
    """The record as a fenced JSON block a protocol ends with."""
    # keys in their order: the factors' order is the grid's
    return f"```json {MARKER}\n{json.dumps(record, indent=1)}\n```\n"


def block_html(record: dict[str, Any]) -> str:
    """The record as an HTML ``<pre>`` (escaped; read back by ``read_protocol``)."""
    text = html.escape(json.dumps(record, indent=1), quote=False)
    return f"<pre id={MARKER}>{text}</pre>"


def read_protocol(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The registration of a protocol file: its record, its sha256 and its text.

    Raises UsageError when the file is missing or holds no protocol block.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"--protocol {path}: cannot read the protocol ({exc.__class__.__name__}).",
            hint="write it first: python -m simstudy protocol STUDY.py -o protocol.md",
        ) from None
    found = _FENCE.search(text)
    raw = found.group(1) if found else None
    if raw is None and (pre := _PRE.search(text)) is not None:
        raw = html.unescape(pre.group(1))
    record: Any = None
    if raw is not None:
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UsageError(
            f"--protocol {path}: no simstudy protocol block (a ```json {MARKER} "
            "fence) in the file, or an unreadable one.",
            hint="pass the file `python -m simstudy protocol STUDY.py -o FILE` wrote "
            "(keep its last block as it is)",
        )
    return {
        "file": file.name,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "record": record,
        "text": text,
    }


def from_store_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """What a store says it computes, in the shape of a protocol record: its
    fingerprint restricted to the levels and methods the study still has."""
    stored = json.loads(json.dumps(meta["fingerprint"]))
    active = meta.get("active")
    hidden: dict[str, Any] = {"levels": {}, "methods": []}
    if active:
        factors = active.get("factors") or stored["factors"]
        for f, levels in stored["factors"].items():
            gone = [lv for lv in levels if lv not in factors.get(f, levels)]
            if gone:
                hidden["levels"][f] = gone
        stored["factors"] = {f: factors.get(f, v) for f, v in stored["factors"].items()}
        kept = active.get("methods") or list(stored["methods"])
        hidden["methods"] = [m for m in stored["methods"] if m not in kept]
        stored["methods"] = {m: h for m, h in stored["methods"].items() if m in kept}
    declared = {"truth": meta.get("truth", {}), "measures": meta.get("measures", {})}
    return {"fingerprint": stored, "declared": declared, "hidden": hidden}


def _levels(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for f, was in old.items():
        if f not in new:
            continue
        added = [lv for lv in new[f] if lv not in was]
        dropped = [lv for lv in was if lv not in new[f]]
        if added:
            out.append(f"factor {f!r}: levels {added!r} added (design points added)")
        if dropped:
            out.append(
                f"factor {f!r}: levels {dropped!r} dropped (design points dropped)"
            )
    return out


def _code(
    what: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> list[str]:
    if old is None or new is None:
        return [f"the code of {what} changed"]
    out = []
    for label, verb in fingerprint.explain(old, new):
        if label == "itself":
            out.append(f"the code of {what} changed")
        else:
            out.append(f"{label} used by {what} {verb}")
    return out or [f"the code of {what} changed"]


def deviations(registered: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a protocol's record and what was run (or is
    declared now): one line each, in a fixed order; [] when nothing does.

    Both are records: ``{"fingerprint": ..., "declared": {"truth", "measures"}}``
    (``now`` may add ``"hidden"``: stored levels and methods left out).
    """
    old, new = registered["fingerprint"], now["fingerprint"]
    out: list[str] = []
    for key, label in (("seed", "seed"), ("scheme", "rng scheme")):
        if old.get(key) != new.get(key):
            out.append(f"{label} changed: {old.get(key)!r} -> {new.get(key)!r}")
    backend = [fp.get("backend", {"name": "numpy"}) for fp in (old, new)]
    if backend[0] != backend[1]:
        out.append(f"backend changed: {backend[0]!r} -> {backend[1]!r}")
    if set(old["factors"]) != set(new["factors"]):
        out.append(f"factors changed: {list(old['factors'])} -> {list(new['factors'])}")
    out += _levels(old["factors"], new["factors"])
    if old["replicates"] != new["replicates"]:
        out.append(
            f"replicates changed: {old['replicates']:,} -> {new['replicates']:,}"
        )
    added = [m for m in new["methods"] if m not in old["methods"]]
    dropped = [m for m in old["methods"] if m not in new["methods"]]
    out += [f"method {m!r} added" for m in added]
    out += [f"method {m!r} dropped" for m in dropped]
    reach_old, reach_new = old.get("reach") or {}, new.get("reach") or {}
    if old["data"] != new["data"]:
        out += _code("the data function", reach_old.get("data"), reach_new.get("data"))
    for m, h in new["methods"].items():
        if m in old["methods"] and old["methods"][m] != h:
            out += _code(
                f"method {m!r}",
                (reach_old.get("methods") or {}).get(m),
                (reach_new.get("methods") or {}).get(m),
            )
    if old.get("fixed") != new.get("fixed"):
        changed = sorted(
            k
            for k in set(old.get("fixed", {})) | set(new.get("fixed", {}))
            if old.get("fixed", {}).get(k) != new.get("fixed", {}).get(k)
        )
        out.append(f"fixed inputs changed: {', '.join(changed)}")
    out += _declared(
        registered.get("declared") or {},
        now.get("declared") or {},
        set(old["methods"]) & set(new["methods"]),
    )
    hidden = now.get("hidden") or {}
    for f, levels in (hidden.get("levels") or {}).items():
        out.append(f"stored results at {f} in {levels!r} excluded (hidden)")
    for m in hidden.get("methods") or []:
        out.append(f"stored results of method {m!r} excluded (hidden)")
    return out


def _declared(old: dict[str, Any], new: dict[str, Any], common: set[str]) -> list[str]:
    out = []
    truth_old, truth_new = old.get("truth") or {}, new.get("truth") or {}
    points = set(truth_old) & set(truth_new)
    if any(truth_old[k] != truth_new[k] for k in points):
        out.append("the truth changed at some design point(s)")
    elif not truth_old and truth_new:
        out.append("a truth was declared")
    elif truth_old and not truth_new:
        out.append("the truth was removed")
    m_old, m_new = old.get("measures") or {}, new.get("measures") or {}
    out += [
        f"method {m!r}: the outputs its measures read changed "
        f"({m_old.get(m)!r} -> {m_new.get(m)!r})"
        for m in sorted(set(m_old) | set(m_new))
        if m in common and m_old.get(m) != m_new.get(m)
    ]
    return out
