"""`simstudy report` on real data: summarize's options, --methods/--points,
--split, an always-present failure section, and Chromium rendering it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from scipy import stats

import simstudy
from simstudy.cli import main
from simstudy.plots.common import with_mcse
from tests.studies import write_study_file
from tests.test_plots_real_data import STUDY
from tests.test_report import _chromium


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-real")
    path = write_study_file(tmp, STUDY, "explode.py")
    simstudy.run(path, store=tmp / "explode.zarr", scheduler="synchronous")
    return tmp / "explode.zarr"


@pytest.fixture(scope="module")
def split_report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "split.html"
    argv = ["report", str(store), "-o", str(out), "--split", "delta"]
    argv += ["--measures", "bias,ci_width,failure_rate,warning_rate"]
    assert main([*argv, "--df", "9", "--level", "0.9"]) == 0
    return out


def test_the_report_uses_summarizes_options(store, split_report):
    text = split_report.read_text()
    assert "level = 0.9" in text
    assert "df = 9.0" in text
    s = simstudy.summarize(simstudy.open_results(store), df=9.0, level=0.9)
    m = "trimmed_mean_long_name"  # Wald intervals from its se
    cell = s.sel(n=10, delta=0.0, method_name=m)
    shown = with_mcse(float(cell.ci_width), float(cell.ci_width_mcse))
    rows = re.findall(rf"<td class=l>{m}</td>(.*?)</tr>", text)
    assert any(f"<td>{shown}</td>" in row for row in rows)  # t at 0.9, as asked
    z = simstudy.summarize(simstudy.open_results(store))  # z at 0.95: not shown
    wide = z.sel(n=10, delta=0.0, method_name=m)
    ratio = stats.norm.ppf(0.975) / stats.t.ppf(0.95, 9)  # same SEs, by hand
    assert float(wide.ci_width) / float(cell.ci_width) == pytest.approx(ratio)


def test_the_report_splits_figures_and_sections_by_a_factor(split_report):
    text = split_report.read_text()
    assert "<h2 class=split>delta = 0.0</h2>" in text
    assert "<h2 class=split>delta = 0.5</h2>" in text
    assert text.count("Zip plots of the interval methods") == 2
    assert "one panel per level of delta" in text


def test_failures_and_warnings_are_always_reported(store, split_report, tmp_path):
    text = split_report.read_text()
    section = text[text.index("Failures and warnings by design point and method") :]
    section = section[: section.index("</table>")]
    assert "fragile" in section
    assert re.search(r"<td>0\.\d+ \(0\.\d+\)</td>", section)  # a rate and its MCSE
    # a zip plot is still drawn; the method without truth is named in a note
    assert "not drawn: lowerbound (no truth for its estimate &#x27;lb&#x27;" in text
    calm = tmp_path / "calm.html"
    argv = ["report", str(store), "-o", str(calm), "--methods", "wald"]
    assert main([*argv, "--measures", "bias"]) == 0  # rates derived from counts
    calm_text = calm.read_text()
    assert "Failures and warnings by design point and method" in calm_text
    assert "Every rate is zero: none of the 160 finished tasks failed" in calm_text


def test_points_and_methods_restrict_the_report(store, tmp_path):
    out = tmp_path / "few.html"
    argv = ["report", str(store), "-o", str(out), "--points", "n=10"]
    assert main([*argv, "--methods", "wald,logit", "--measures", "bias"]) == 0
    text = out.read_text()
    assert "n=10, delta=0.5" in text
    assert "n=30" not in text
    assert "fragile</td>" not in text


def test_summarize_takes_methods_and_points_too(store, capsys):
    argv = ["summarize", str(store), "--format", "json", "--methods", "wald"]
    assert main([*argv, "--points", "delta=0.5", "--measures", "bias"]) == 0
    records = json.loads(capsys.readouterr().out)["measures"]
    assert {r["method"] for r in records} == {"wald"}
    assert {r["delta"] for r in records} == {0.5}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--split", "m"], "--split 'm' is not a factor of this study"),
        (["--points", "n=99"], "factor 'n' has no level '99'"),
        (["--points", "n"], "--points expects FACTOR=LEVEL"),
        (["--methods", "ols"], "unknown method 'ols'"),
        (["--level", "95"], "--level must be between 0 and 1"),
    ],
    ids=["split-not-a-factor", "no-such-level", "points-syntax", "method", "level"],
)
def test_bad_report_options_exit_2_and_write_nothing(
    store, tmp_path, capsys, flags, message
):
    out = tmp_path / "r.html"
    assert main(["report", str(store), "-o", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_chromium_renders_the_split_report(split_report, tmp_path):
    chromium = _chromium()
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [
            chromium,
            *flags,
            "--enable-logging=stderr",
            "--dump-dom",
            split_report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Failures and warnings by design point and method" in dom.stdout
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    shot = tmp_path / "split.png"
    subprocess.run(
        [
            chromium,
            *flags,
            "--window-size=1200,3000",
            f"--screenshot={shot}",
            split_report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000
