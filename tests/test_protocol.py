"""`simstudy protocol`, `run --protocol` and the report's deviations section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from simstudy.analysis.registry import BUILTINS
from simstudy.cli import main
from simstudy.declare.deviations import deviations, read_protocol
from simstudy.declare.loader import load_study
from simstudy.errors import UsageError
from simstudy.report.sections import deviations_section
from simstudy.sharing.protocol import compare

STUDY = '''
"""Aims: does shrinking the mean by K pay under small n?"""
import numpy as np
from simstudy import Study

K = 2.0

study = Study("tiny", factors={"n": [5, 10], "mu": [0.0]}, replicates=6, seed=3)


@study.data
def normal(rng, n, mu):
    """A normal sample of size n around mu."""
    return mu + rng.standard_normal(n)


def shrink(v):
    return v / K


@study.method
def mean(x):
    """The sample mean, shrunk by the helper."""
    return {"estimate": shrink(x.mean())}


@study.method
def median(x):
    return {"estimate": np.median(x)}


study.truth(estimate=0.0)
'''


def _protocol(path: Path, out: Path) -> None:
    assert main(["protocol", str(path), "-o", str(out), "--pilot", "4"]) == 0


def test_protocol_has_every_ademp_section_and_the_fingerprint(write_study, tmp_path):
    path = write_study(STUDY)
    out = tmp_path / "protocol.md"
    _protocol(path, out)
    text = out.read_text()
    for head in (
        "## Aims",
        "## Data-generating mechanisms",
        "## Estimands and truths",
        "## Methods",
        "## Performance measures",
        "## Number of replicates",
        "## Random numbers",
        "## Failure handling",
        "## Software",
        "## Fingerprint",
    ):
        assert head in text
    assert "does shrinking the mean by K pay" in text  # aims: the docstring
    assert "`normal` (study.py:11): A normal sample of size n" in text
    assert "| mean | " in text
    assert "MCSE(bias)" in text
    assert "Seed 3, scheme `spawn`" in text
    record = read_protocol(out)["record"]
    assert record["fingerprint"] == load_study(path).fingerprint()
    assert list(record["fingerprint"]["factors"]) == ["n", "mu"]  # the grid's order


def test_an_html_protocol_reads_back_the_same_record(write_study, tmp_path):
    path = write_study(STUDY)
    _protocol(path, tmp_path / "p.md")
    _protocol(path, tmp_path / "p.html")
    assert "<h2>Aims</h2>" in (tmp_path / "p.html").read_text()
    md = read_protocol(tmp_path / "p.md")["record"]
    html = read_protocol(tmp_path / "p.html")["record"]
    assert md["fingerprint"] == html["fingerprint"]


def test_the_measures_are_those_summarize_computes_from_the_declarations(
    write_study, tmp_path
):
    """An SE gives Wald intervals and tests: their measures are listed too."""
    source = STUDY.replace(
        "@study.method\ndef mean(x):", '@study.method(se="se")\ndef mean(x):'
    ).replace(
        '"estimate": shrink(x.mean())}',
        '"estimate": shrink(x.mean()), "se": x.std() / len(x) ** 0.5}',
    )
    path = write_study(source)
    _protocol(path, tmp_path / "protocol.md")
    text = (tmp_path / "protocol.md").read_text()
    table = text[text.index("## Performance measures") : text.index("## Number of")]
    listed = [
        line.split("`")[1] for line in table.splitlines() if line.startswith("| `")
    ]
    # truth and an SE: every measure a run may aim at, in the summary's order,
    # but relative bias (the truth is 0)
    targets = [m.name for m in BUILTINS if m.target and m.name != "relbias"]
    assert listed == targets
    assert {"becoverage", "ci_width", "power", "warning_rate"} <= set(listed)


def test_target_mcse_gives_the_replicates_each_target_needs(write_study, capsys):
    path = write_study(STUDY)
    argv = ["protocol", str(path), "--pilot", "4", "--target-mcse", "bias=0.01"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "replicates for MCSE(bias) <= 0.01" in out
    assert "The run uses `--target-mcse bias=0.01`" in out


def test_a_changed_constant_and_method_are_deviations_in_the_report(
    write_study, tmp_path, capsys
):
    path = write_study(STUDY)
    proto = tmp_path / "protocol.md"
    _protocol(path, proto)
    text = path.read_text().replace("K = 2.0", "K = 3.0")
    path.write_text(text.replace("np.median(x)}", "np.median(x) * 1.0}"))
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--protocol", str(proto)]
    assert main([*argv, "--scheduler", "synchronous", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "note: the study deviates from" in err
    assert "in 2 way(s) (global 'K' used by method 'mean' changed; ...)" in err
    assert main(["report", str(store), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    section = page[page.index("Deviations from the protocol") :]
    section = section[: section.index("<h2>", 10)]
    assert "<li>global &#x27;K&#x27; used by method &#x27;mean&#x27; changed</li>" in (
        section
    )
    assert "<li>the code of method &#x27;median&#x27; changed</li>" in section
    capsys.readouterr()
    assert main(["protocol", str(path), "--compare", str(proto)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  global 'K' used by method 'mean' changed",
        "  the code of method 'median' changed",
    ]


def test_a_changed_estimate_output_of_a_method_is_a_deviation(write_study, tmp_path):
    path = write_study(STUDY)
    proto = tmp_path / "protocol.md"
    _protocol(path, proto)
    text = path.read_text().replace(
        '@study.method\ndef median(x):\n    return {"estimate": np.median(x)}',
        '@study.method(estimate="middle")\ndef median(x):\n    return {"middle": np.median(x)}',
    )
    path.write_text(text)
    found = compare(load_study(path), proto)
    assert (
        "method 'median': the outputs its measures read changed "
        "(None -> {'estimate': 'middle'})"
    ) in found, found


def test_no_change_says_none(write_study, tmp_path):
    path = write_study(STUDY)
    proto = tmp_path / "protocol.md"
    _protocol(path, proto)
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--protocol", str(proto)]
    assert main([*argv, "--scheduler", "synchronous", "--no-progress"]) == 0
    assert main(["report", str(store), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "<p>None: the store holds exactly what the protocol registered.</p>" in page
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["simstudy"]
    assert meta["protocol"]["sha256"] == read_protocol(proto)["sha256"]
    restart = ["run", str(path), "--store", str(store), "--restart"]
    assert main([*restart, "--scheduler", "synchronous", "--no-progress"]) == 0
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["simstudy"]
    assert meta["protocol"]["sha256"] == read_protocol(proto)["sha256"]  # kept


def test_a_changed_helper_module_is_a_deviation(write_study, tmp_path):
    write_study("SCALE = 1.0\n", name="scaling.py")
    path = write_study(
        STUDY.replace(
            "import numpy as np", "import numpy as np\nimport scaling"
        ).replace(
            "return mu + rng.standard_normal(n)",
            "return mu + rng.standard_normal(n) * scaling.SCALE",
        )
    )
    proto = tmp_path / "protocol.md"
    _protocol(path, proto)
    (tmp_path / "scaling.py").write_text("SCALE = 2.0\n")
    sys.modules.pop("scaling", None)  # a new process would import it afresh
    try:
        found = compare(load_study(path), proto)
    finally:
        sys.modules.pop("scaling", None)
    assert found == [
        "module 'scaling' used by the data function changed",
    ]


def _record(**changes):
    fp = {
        "seed": 1,
        "scheme": "spawn",
        "factors": {"n": [5, 10]},
        "replicates": 100,
        "methods": {"a": "h1", "b": "h2"},
        "data": "d",
        "fixed": {},
        "reach": {"data": {"itself": "d"}, "methods": {}},
    }
    fp.update(changes)
    return {"fingerprint": fp, "declared": {"truth": {}, "measures": {}}}


def test_design_changes_are_listed_one_line_each():
    new = _record(
        seed=2,
        factors={"n": [10, 20]},
        replicates=50,
        methods={"a": "h1", "c": "h3"},
    )
    assert deviations(_record(), new) == [
        "seed changed: 1 -> 2",
        "factor 'n': levels [20] added (design points added)",
        "factor 'n': levels [5] dropped (design points dropped)",
        "replicates changed: 100 -> 50",
        "method 'c' added",
        "method 'b' dropped",
    ]
    assert deviations(_record(), _record()) == []


def test_the_section_escapes_what_it_shows():
    reg = {"file": "<b>p.md", "sha256": "ab" * 32, "record": _record()}
    meta = {**_record(methods={"a": "h1", "b": "h2", "<i>": "h"}), "truth": {}}
    shown = deviations_section(reg, meta)
    assert "&lt;b&gt;p.md" in shown
    assert "method &#x27;&lt;i&gt;&#x27; added" in shown
    assert "<b>" not in shown
    assert "<i>" not in shown


@pytest.mark.parametrize(
    "content",
    ["no block here\n", "```json simstudy-protocol\n{not json\n```\n"],
    ids=["no-block", "bad-json"],
)
def test_a_bad_protocol_is_refused_before_anything_is_written(
    write_study, tmp_path, capsys, content
):
    path = write_study(STUDY)
    proto = tmp_path / "protocol.md"
    proto.write_text(content)
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--protocol", str(proto)]
    assert main([*argv, "--scheduler", "synchronous", "--no-progress"]) == 2
    assert "no simstudy protocol block" in capsys.readouterr().err
    assert not store.exists()
    with pytest.raises(UsageError, match="no simstudy protocol block"):
        read_protocol(proto)
