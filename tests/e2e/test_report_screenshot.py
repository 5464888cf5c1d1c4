"""The offline report renders: a sample page (orchard-report-sample, synthetic data with 141 classes)
is screenshotted in Debian's headless Chromium, and the PNG must show the charts: not blank, the
scree bars, cumulative curve and k line in their colours, and the scatter points in the class colours.

Environment:
  ORCHARD_BUILD            build folder with the orchard-report-sample tool (set by CTest).
  ORCHARD_REPORT_HTML      optional: screenshot this page instead (e.g. OUTPUT/report/index.html).
  ORCHARD_SCREENSHOT_OUT   optional: also copy the PNG there, to look at it.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BUILD = os.environ.get("ORCHARD_BUILD")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def css(html, pattern):
    m = re.search(pattern, html)
    assert m, f"style rule {pattern!r} not found in the page"
    return m.group(1)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if os.environ.get("ORCHARD_REPORT_HTML"):
        return Path(os.environ["ORCHARD_REPORT_HTML"]).resolve()
    if not BUILD:
        pytest.skip("ORCHARD_BUILD is not set (run through ctest, or export it)")
    tool = Path(BUILD) / "tools" / "orchard-report-sample"
    if not tool.is_file():
        tool = Path(BUILD) / "orchard-report-sample"
    assert tool.is_file(), f"orchard-report-sample not found under {BUILD}: build that target first"
    html = tmp_path_factory.mktemp("report") / "index.html"
    subprocess.run([str(tool), str(html)], check=True, timeout=60)
    return html


@pytest.fixture(scope="module")
def screenshot(page, tmp_path_factory):
    if not CHROMIUM:
        pytest.fail("chromium not found: install Debian's chromium package")
    tmp = tmp_path_factory.mktemp("shot")
    png = tmp / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", f"--screenshot={png}", "--window-size=1200,2400",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert png.is_file(), f"chromium wrote no screenshot ({proc.returncode}):\n{proc.stderr[-3000:]}"
    if os.environ.get("ORCHARD_SCREENSHOT_OUT"):
        shutil.copy(png, os.environ["ORCHARD_SCREENSHOT_OUT"])
    print("screenshot:", png)
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)


def pixels_near(img, colour, tol=6):
    """Number of pixels within tol (per channel) of colour."""
    return int(np.all(np.abs(img - np.array(colour, dtype=np.int16)) <= tol, axis=2).sum())


def test_not_blank(screenshot):
    assert screenshot.shape == (2400, 1200, 3)
    non_white = int((screenshot.min(axis=2) < 235).sum())
    assert non_white > 0.05 * 2400 * 1200, f"only {non_white} non-white pixels: the page looks blank"
    distinct = len(np.unique(screenshot.reshape(-1, 3), axis=0))
    assert distinct > 300, f"only {distinct} distinct colours: too few for a page with charts"


def test_scree_chart_drawn(page, screenshot):
    html = page.read_text()
    bars = rgb(css(html, r"\.bars rect\{fill:(#[0-9a-f]{6})\}"))
    curve = rgb(css(html, r"\.cumulative\{fill:none;stroke:(#[0-9a-f]{6})"))
    kline = rgb(css(html, r"\.kline\{stroke:(#[0-9a-f]{6})"))
    colours = {}
    for (name, colour) in (("bars", bars), ("cumulative", curve), ("k line", kline)):
        colours[name] = pixels_near(screenshot, colour)
    print("scree pixels:", colours)
    assert colours["bars"] > 300  # few pixels when k is large and most bars are tiny
    assert colours["cumulative"] > 300
    assert colours["k line"] > 100


def test_scatter_shows_class_colours(page, screenshot):
    html = page.read_text()
    groups = re.findall(r'<g class="pts" fill="(#[0-9a-f]{6})"><title>', html)
    assert groups, "no scatter groups in the page"
    # Scatter points are drawn with .pts{fill-opacity:a} over white: the visible colour is a*c + (1-a)*255,
    # a colour neither the legend swatches nor the per-class bars (both opaque) produce.
    alpha = float(css(html, r"\.pts\{fill-opacity:([0-9.]+)\}"))
    wanted = {c: tuple(round(alpha * v + (1 - alpha) * 255) for v in rgb(c)) for c in groups}
    counts = {c: pixels_near(screenshot, w, tol=3) for c, w in wanted.items()}
    seen = sum(1 for n in counts.values() if n >= 5)
    print(f"{seen} of {len(groups)} class colours visible in the scatter")
    assert seen >= 0.8 * len(groups)
