"""app.py in a real browser: headless Chromium driven by Selenium uploads the astronaut, then text files.

Needs gradio and selenium (requirements-app.txt, requirements-test.txt) and Debian's `chromium` and
`chromium-driver` (apt-get install chromium chromium-driver); skipped, with the reason, without them.
Selenium is pointed at /usr/bin/chromedriver explicitly: Selenium Manager would try to download one.
`SAVE_README_SCREENSHOT=1 python -m pytest -q tests/test_app_browser.py` also rewrites img/app_astronaut.png.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from expression.checkpoint import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "img" / "app_astronaut.png"
START_TIMEOUT = 90  # s until app.py prints its URL (imports, model, gradio) on a busy 2-core machine
RESULT_TIMEOUT = 40


def find_browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def find_driver():
    path = "/usr/bin/chromedriver"
    return path if os.access(path, os.X_OK) else shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio", reason="the app needs gradio: pip install -r requirements-app.txt")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install -r requirements-test.txt")
    from selenium.webdriver.chrome.service import Service
    binary, driver = find_browser(), find_driver()
    if not binary or not driver:
        pytest.skip(f"no Chromium and chromedriver found (browser {binary}, driver {driver}): "
                    f"apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1250", "--hide-scrollbars"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield chrome
    chrome.quit()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """app.py as a user starts it, in an empty working folder, on a free port."""
    work = tmp_path_factory.mktemp("app_cwd")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(SHIPPED_MODEL),
                             "--port", str(port), "--out", "out", "--device", "cpu"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not any(line.startswith("app: running on") for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("app.py did not start:\n" + "".join(lines))
        time.sleep(0.3)
    url = next(line for line in lines if line.startswith("app: running on")).split()[3]
    yield url, work, lines
    proc.terminate()
    proc.wait(timeout=20)


def wait_for(chrome, predicate, what: str, timeout: float = RESULT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}; page says: {chrome.find_element('tag name', 'body').text[:600]}")


def status(chrome) -> str:
    return chrome.find_element("id", "status").text


def test_astronaut_then_a_text_file(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    url, work, lines = server
    assert url.startswith("http://127.0.0.1:")
    assert any(line.startswith(f"model: {SHIPPED_MODEL}") for line in lines)  # says which model it took
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    text = tmp_path / "notes.txt"
    text.write_text("this is not a picture\n")
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture either\n")

    browser.get(url)
    upload = wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"),
                      "the upload field")
    upload[0].send_keys(str(photo))
    said = wait_for(browser, lambda: "face(s)" in status(browser) and status(browser), "the astronaut's result")
    assert said.startswith("1 face(s) in astronaut.png (512x512 px): happy")  # the shipped model: happy, p 0.91
    size = wait_for(browser, lambda: browser.execute_script(
        "const i = document.querySelector('#annotated img');"
        "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null;"), "the annotated photo")
    assert size == [512, 512]
    faces = wait_for(browser, lambda: browser.execute_script(
        "const i = document.querySelector('#faces img'); return i && i.complete && i.naturalWidth;"), "the face panel")
    assert faces > 500  # crop, explanation, attention map and bars side by side
    if os.environ.get("SAVE_README_SCREENSHOT") == "1":
        browser.execute_script("window.scrollTo(0, 0)")
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
        shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(SCREENSHOT, optimize=True)  # a third of the bytes

    browser.find_element(By.CSS_SELECTOR, "#photo button[aria-label='Remove Image']").click()
    wait_for(browser, lambda: "Upload a photo" in status(browser), "the cleared page")
    # A .txt file: the page itself refuses it (gr.Image accepts image/*) and says so; no request is sent.
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(text))
    wait_for(browser, lambda: "Invalid file type: notes.txt" in browser.find_element(By.TAG_NAME, "body").text,
             "the page's file-type message")
    # The same text named .png passes the page's check: the app's own message, and the server goes on.
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(fake))
    said = wait_for(browser, lambda: "Could not analyse" in status(browser) and status(browser), "the error message")
    assert "fake.png is not an image this app can read" in said
    assert not browser.execute_script("const i = document.querySelector('#annotated img'); return i && i.src;")

    # offline: every resource the page loaded came from the app itself (no CDN, no fonts, no analytics)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(url.rstrip("/")) for r in resources), resources
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # nothing written outside --out
