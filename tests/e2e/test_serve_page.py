"""The page of `orchard serve` (GET /) in Debian's headless Chromium, phone-sized (412x915), via Selenium.

A held-out Banana 1 photo is chosen in the file input: the preview shows it, the five predictions are
drawn best first ("Banana 1" on top) with their bars, and the page loaded nothing from outside the
server. The screenshot (saved to $ORCHARD_SCREENSHOT_OUT when set) must not be blank and must show the
bars' green (#2e7d32). A file that is not an image shows the server's 400 and its message in #status.
Skipped only when chromium or chromedriver is not installed.
"""
import io
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import Server, build_trained, held_out  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BAR_GREEN = (0x2E, 0x7D, 0x32)
WAIT_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory, orchard_bin, model_env):
    trained = build_trained(tmp_path_factory, orchard_bin, model_env)
    with Server(orchard_bin, model_env, trained, tmp_path_factory.mktemp("serve-page-logs")) as srv:
        yield srv


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=412,915",
                "--hide-scrollbars", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    d.set_page_load_timeout(WAIT_S)
    try:
        yield d
    finally:
        d.quit()


def open_page(driver, server):
    driver.get(f"http://127.0.0.1:{server.port}/")
    assert driver.title == "Orchard — what fruit is this?", driver.title


def external_resources(driver, origin: str) -> list:
    """Resources the page fetched from anywhere but origin (blob: and data: URLs are local)."""
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; });")
    return [n for n in names if not n.startswith((origin + "/", "blob:", "data:"))]


def bar_green_pixels(png: bytes, tol: int = 8) -> tuple[int, int]:
    """(pixels within tol of the bar green, distinct colours) of a screenshot."""
    import numpy as np
    from PIL import Image
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    green = int(np.all(np.abs(img - np.array(BAR_GREEN, dtype=np.int16)) <= tol, axis=2).sum())
    distinct = len(np.unique(img.reshape(-1, 3), axis=0))
    return green, distinct


def test_photo_is_classified_on_a_phone(driver, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(driver, server)
    source = driver.page_source
    assert "http://" not in source.replace(f"http://127.0.0.1:{server.port}", "") and "https://" not in source, \
        "the page names an external URL"
    assert driver.find_element(By.ID, "photo").get_attribute("accept") == "image/*"
    assert driver.find_element(By.ID, "status").get_attribute("aria-live") == "polite"

    driver.find_element(By.ID, "photo").send_keys(str(held_out("Banana 1").resolve()))  # chromedriver wants a canonical path
    WebDriverWait(driver, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".prediction")) == 5,
                                        "no 5 predictions drawn: status " + driver.find_element(By.ID, "status").text)
    predictions = driver.find_elements(By.CSS_SELECTOR, ".prediction")
    labels = [p.find_element(By.CSS_SELECTOR, ".label").text for p in predictions]
    assert labels[0] == "Banana 1", labels
    assert "%" in predictions[0].text, predictions[0].text
    widths = [p.find_element(By.CSS_SELECTOR, ".fill").size["width"] for p in predictions]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0, widths
    WebDriverWait(driver, WAIT_S).until(EC.visibility_of_element_located((By.ID, "preview")))
    assert driver.execute_script("return document.getElementById('preview').naturalWidth") > 0
    assert "Banana 1" in driver.find_element(By.ID, "status").text
    assert external_resources(driver, f"http://127.0.0.1:{server.port}") == []

    driver.execute_script("document.getElementById('results').scrollIntoView({block: 'nearest'});")
    png = driver.get_screenshot_as_png()
    if os.environ.get("ORCHARD_SCREENSHOT_OUT"):
        Path(os.environ["ORCHARD_SCREENSHOT_OUT"]).write_bytes(png)
    (tmp_path / "serve-page.png").write_bytes(png)
    green, distinct = bar_green_pixels(png)
    print(f"screenshot: {tmp_path / 'serve-page.png'}: {green} bar-green pixels, {distinct} colours")
    assert distinct > 200, f"only {distinct} distinct colours: the page looks blank"
    assert green > 500, f"only {green} pixels of the bar green {BAR_GREEN}: no bars drawn"


def test_error_is_shown(driver, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(driver, server)
    text_file = tmp_path / "not-a-photo.jpg"
    text_file.write_text("This is a shopping list, not a photo.\n")
    driver.find_element(By.ID, "photo").send_keys(str(text_file.resolve()))
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, WAIT_S).until(lambda d: "400" in status.text, "no HTTP status shown")
    assert "Error 400" in status.text and len(status.text) > len("Error 400: "), status.text
    assert driver.find_elements(By.CSS_SELECTOR, ".prediction") == []
