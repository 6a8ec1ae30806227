"""`simstudy report`: one self-contained HTML file that Chromium renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import simstudy
from simstudy.cli import main
from tests.studies import write_study_file

STUDY = """
import numpy as np
from simstudy import Study

study = Study("rep", factors={"n": [10, 40], "shift": [0.0, 1.0]}, replicates=60, seed=2)
study.truth(est=0.0)

@study.data
def gen(rng, n, shift):
    return rng.standard_normal(n)

@study.method(estimate="est", se="se", ci=("lo", "hi"))
def mean(x):
    m, s = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    return {"est": m, "se": s, "lo": m - 2 * s, "hi": m + 2 * s}

@study.method(estimate="est")
def fragile(x, shift):
    if x[0] > 1.5:
        raise ArithmeticError("did not converge")
    return {"est": np.median(x) + 0 * shift}
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, (
        "headless Chromium is needed (Debian package chromium; .ci/run installs it)"
    )
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    path = write_study_file(tmp, STUDY, "rep.py")
    simstudy.run(path, store=tmp / "rep.zarr", scheduler="synchronous")
    out = tmp / "report.html"
    assert main(["report", str(tmp / "rep.zarr"), "-o", str(out)]) == 0
    return out


def test_the_report_is_one_self_contained_file(report):
    text = report.read_text()
    assert "<script" not in text  # nothing to run
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing to fetch
    for section in (
        "Study and provenance",
        "Performance measures",
        "Measures against factors",
        "Workers: tasks over time",
        "Failures (",
    ):
        assert section in text
    assert text.count("<svg") >= 4 * 2 + 1  # plots (measures x factors) + timeline
    assert "ArithmeticError: method &#x27;fragile&#x27;: did not converge" in text
    assert "coverage" in text
    assert "± " in text
    assert not re.search(r"https?://", text)  # no URL at all, not even a namespace
    assert "Zip plots of the interval methods (every design point)" in text
    assert text.count("data:image/png;base64,") == 2  # zip + distributions
    assert "failure_rate" in text  # something failed: its rate is shown


def test_measures_table_shows_value_and_mcse_in_parentheses(report):
    text = report.read_text()
    table = text[text.index("<table class=measures>") :]
    table = table[: table.index("</table>")]
    cells = re.findall(r"<td>(-?[0-9.]+) \(([0-9.]+)\)</td>", table)
    assert len(cells) > 20
    for value, mcse in cells:  # as many decimals as the MCSE's two digits need
        decimals = len(mcse.split(".")[1]) if "." in mcse else 0
        assert (len(value.split(".")[1]) if "." in value else 0) == decimals
        digits = mcse.replace(".", "").lstrip("0")
        assert len(digits) == 2 or decimals == 0 or float(mcse) == 0, mcse


def test_measures_kept_out_of_the_figures_still_have_their_table(report):
    """median_bias is a table measure (drawn=False): in a table, not a figure."""
    text = report.read_text()
    tables = text[
        text.index("Performance measures") : text.index("Measures against factors")
    ]
    assert "Robust, and given rejection" in tables
    assert "median_bias" in tables
    figures = text[text.index("Measures against factors") :]
    assert "median_bias" not in figures


def test_chromium_renders_the_report_without_errors(report, tmp_path):
    chromium = _chromium()
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [chromium, *flags, "--enable-logging=stderr", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Performance measures" in dom.stdout
    assert dom.stdout.count("<svg") >= 9
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *flags,
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a page with tables and plots, not blank


ARRAY_STUDY = """
import numpy as np
from simstudy import Study

study = Study("arr", factors={"n": [10, 40]}, replicates=20, seed=3)
study.truth(est=[0.0, 1.0])

@study.data
def gen(rng, n):
    return rng.standard_normal((n, 2)) + np.array([0.0, 1.0])

@study.method(estimate="est", se="se")
def mean(x):
    return {"est": x.mean(axis=0), "se": x.std(axis=0, ddof=1) / np.sqrt(len(x))}

@study.method(estimate="est")
def median(x):
    return {"est": np.median(x, axis=0)}
"""


def test_report_of_an_array_output_with_reference_alpha_and_cases(
    write_study, tmp_path
):
    path = write_study(ARRAY_STUDY, "arr.py")
    simstudy.run(path, store=tmp_path / "arr.zarr", scheduler="synchronous")
    out = tmp_path / "arr.html"
    argv = ["report", str(tmp_path / "arr.zarr"), "-o", str(out)]
    argv += ["--reference", "mean", "--alpha", "0.1", "--cases", "complete"]
    assert main(argv) == 0
    text = out.read_text()
    assert "est_dim_0" in text  # the array's elements are design points of the plots
    assert "cases = complete" in text
    assert "alpha = 0.1" in text
    assert "relprec" in text  # the reference method gives relative precision
    assert "No task failed." in text
    assert "failure_rate" not in text  # nothing failed: no all-zero panels
    assert not re.search(r"https?://", text)
    flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
    ]
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Measures against factors" in dom.stdout
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line]


def test_report_refuses_a_bad_alpha(report, tmp_path, capsys):
    store = report.parent / "rep.zarr"
    argv = ["report", str(store), "-o", str(tmp_path / "r.html"), "--alpha", "2"]
    assert main(argv) == 2
    assert "--alpha must be between 0 and 1" in capsys.readouterr().err


def test_report_of_a_non_store_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "is not a simstudy store" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_into_a_missing_directory_exits_2(report, tmp_path, capsys):
    store = report.parent / "rep.zarr"
    assert main(["report", str(store), "-o", str(tmp_path / "no" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


MANY_POINTS = """
import numpy as np
from simstudy import Study

study = Study(
    "many",
    factors={"a": [1, 2, 3, 4], "b": [1, 2, 3, 4], "c": [1, 2, 3, 4]},
    replicates=3,
    seed=4,
)
study.truth(estimate=0.0)

@study.data
def gen(rng, a, b, c):
    return rng.standard_normal(5)

@study.method(se="se")
def mean(x):
    return {"estimate": x.mean(), "se": x.std(ddof=1) / np.sqrt(len(x))}
"""


def test_report_of_64_design_points_stays_bounded(write_study, tmp_path):
    """3 factors x 4 levels: one nested-loop plot per measure (not a panel
    per level combination), zip and box plots of a few points, and the
    long measures tables folded."""
    path = write_study(MANY_POINTS, "many.py")
    simstudy.run(path, store=tmp_path / "many.zarr", scheduler="synchronous")
    out = tmp_path / "many.html"
    assert main(["report", str(tmp_path / "many.zarr"), "-o", str(out)]) == 0
    text = out.read_text()
    figures = text[text.index("Measures against factors") :]
    figures = figures[: figures.index("Workers: tasks over time")]
    assert 5 <= figures.count("<svg") <= 14  # one per measure shown
    assert "64 design points (4 x 4 x 4, nested as listed)" in figures
    assert "Zip plots of the interval methods (4 of 64 design points)" in text
    assert "Estimates by method (8 of 64 design points)" in text
    assert "<details><summary>" in text  # 64-row tables are folded
    assert out.stat().st_size < 1_500_000
