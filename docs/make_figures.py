"""Make the pictures in docs/img from real runs of the example studies.

    python docs/make_figures.py [WORKDIR]

Runs studies/location.py and studies/intervals.py into WORKDIR (default: a
temporary directory; an existing store there is resumed, not rerun), draws
each simstudy.plots figure into docs/img/plot-*.png, writes both HTML
reports and screenshots them with headless Chromium into
docs/img/report-*.png (skipped, with a note, when Chromium is missing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

import simstudy
from simstudy import plots

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
DPI = 80


def save(fig, name: str) -> None:
    """Save a figure as a small PNG (a 256-colour palette keeps it light)."""
    path = IMG / f"plot-{name}.png"
    fig.savefig(path, dpi=DPI)
    shrink(path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} kB")


def shrink(path: Path) -> None:
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def screenshot(html: Path, name: str, height: int = 2000) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: report screenshots skipped")
        return
    path = IMG / f"report-{name}.png"
    subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size=1280,{height}",
            f"--screenshot={path}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shrink(path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} kB")


def main(work: Path) -> None:
    IMG.mkdir(exist_ok=True)
    stores = {}
    for name in ("location", "intervals"):
        stores[name] = work / f"{name}.zarr"
        simstudy.run(ROOT / "studies" / f"{name}.py", store=stores[name])
        html = work / f"{name}.html"
        simstudy.write_report(stores[name], html)
        screenshot(html, name)
    location = simstudy.open_results(stores["location"])
    intervals = simstudy.open_results(stores["intervals"])
    loc_summary = simstudy.summarize(location)
    iv_summary = simstudy.summarize(intervals)
    wide = [{"n": 10, "sigma": 1.0}, {"n": 100, "sigma": 1.0}]
    save(plots.zip_plot(intervals, points=wide), "zip")
    save(plots.nested_loop_plot(iv_summary, "coverage"), "nested-loop")
    save(plots.lollipop_plot(loc_summary, "bias"), "lollipop")
    save(plots.heatmap(loc_summary, "rmse"), "heatmap")
    save(plots.scatter_plot(location, reference="mean", points={"n": 100}), "scatter")
    save(
        plots.bland_altman_plot(
            location, methods=["median", "trimmed"], points={"n": 100}
        ),
        "bland-altman",
    )
    save(plots.distribution_plot(location, "estimate", columns=3), "distribution")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
