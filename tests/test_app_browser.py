"""app.py served, as users reach it: one server for the module, started as a user starts it.

- Over HTTP, as gradio_client does (gradio's upload and /call API): every image mode through the served
  app, and two clients that cannot fetch each other's files.
- In a real browser: headless Chromium driven by Selenium uploads the astronaut as 8-bit, 16-bit and
  RGBA PNGs, then text files. Needs selenium (requirements-test.txt) and Debian's `chromium` and
  `chromium-driver` (apt-get install chromium chromium-driver); skipped, with the reason, without them.
  Selenium is pointed at /usr/bin/chromedriver explicitly: Selenium Manager would try to download one.
  `SAVE_README_SCREENSHOT=1 python -m pytest -q tests/test_app_browser.py` also rewrites img/app_astronaut.png.

The server runs the shipped model (the tests' random models would not say happy).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from expression.apps.app_client import AppClient, serve
from expression.core.checkpoint import SHIPPED_MODEL
from expression.demo.synthetic import png_claiming

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "img" / "app_astronaut.png"
START_TIMEOUT = 240  # s until app.py prints its URL: seconds when quiet, over 90 niced beside a training run
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """app.py as a user starts it, in an empty working folder, on a free port, two requests at a time."""
    pytest.importorskip("gradio", reason="the app needs gradio: pip install -r requirements-app.txt")
    work = tmp_path_factory.mktemp("app_cwd")
    try:
        with serve(["--checkpoint", SHIPPED_MODEL, "--out", "out", "--device", "cpu", "--workers", "2"], work,
                   START_TIMEOUT) as running:
            yield running.url, work, running.lines, running
    except RuntimeError as err:
        pytest.fail(str(err))


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


# ---------------------------------------------------------------------------------------------------
# Over HTTP: gradio's upload and /call API, what gradio_client uses, one client per user


def astronaut_files(folder: Path) -> dict:
    """The astronaut in the modes a user may upload, each as predict_FER.py reads it: happy."""
    astro = Image.fromarray(skimage.data.astronaut())
    gray = np.asarray(astro.convert("L"))
    paths = {}

    def save(name, image, **options):
        paths[name] = folder / name
        image.save(paths[name], **options)

    save("astronaut_8bit.png", astro)
    save("astronaut_16bit.png", Image.fromarray(gray.astype(np.uint16) * 257))  # I;16: gradio made it white
    yy, xx = np.mgrid[:512, :512]
    alpha = np.where((yy - 180) ** 2 + (xx - 230) ** 2 < 200 ** 2, 255, 0).astype(np.uint8)
    rgba = np.dstack([np.asarray(astro), alpha])
    rgba[alpha == 0, :3] = 0  # what the transparent pixels hold is black: composited on white, not shown black
    save("astronaut_rgba.png", Image.fromarray(rgba, "RGBA"))
    save("astronaut_cmyk.jpg", astro.convert("CMYK"), quality=95)
    save("astronaut_palette.png", astro.quantize(256))
    save("astronaut_la.png", astro.convert("LA"))
    save("astronaut_animated.gif", astro, save_all=True, append_images=[astro.rotate(180)])
    return paths


def test_every_image_mode_through_the_served_app(server, tmp_path):
    url, work, *_ = server
    user = AppClient(url)
    for name, path in astronaut_files(tmp_path).items():
        annotated, panels, records, status = user.analyse(path)
        assert status.startswith(f"1 face(s) in {name.replace('_', chr(92) + '_').replace('.', chr(92) + '.')} "
                                 f"(512x512 px)") and ": **happy**" in status, (name, status)
        assert ("Only the first frame of this animation was analysed" in status) == name.endswith(".gif"), status
        code, data = user.fetch(annotated["url"])
        assert code == 200
        photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if name == "astronaut_rgba.png":  # transparency composited on white, as a viewer shows it
            assert photo[500:, 500:].min() > 230
    # Refused from the header, before any decoding: 13000 x 13000 real pixels (169 MP of zeros: 164 KB),
    # one that claims 48 MP, one that claims 10 gigapixels; and a text file named .png.
    Image.new("L", (13000, 13000)).save(tmp_path / "huge_gray.png")
    (tmp_path / "claims_48mp.png").write_bytes(png_claiming(8000, 6000))
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (tmp_path / "fake.png").write_text("not a picture\n")
    for name, words in (("huge_gray.png", "too large \\(13000x13000 px\\)"),
                        ("claims_48mp.png", "too large \\(8000x6000 px\\)"),
                        ("bomb.png", "more than PIL's own limit"),
                        ("fake.png", "is not an image this app can read")):
        start = time.monotonic()
        annotated, panels, records, status = user.analyse(tmp_path / name)
        assert status.startswith("**Could not analyse this file:**") and words in status, status
        assert annotated is None and records is None and time.monotonic() - start < 10
    assert not list((work / "out" / "cache").rglob("huge_gray*.webp"))  # no converted copy of anything


def test_a_second_client_cannot_fetch_the_first_ones_files(server, tmp_path):
    url, work, *_ = server
    out = (work / "out").resolve()
    alice, bob = AppClient(url), AppClient(url)
    paths = astronaut_files(tmp_path)
    before = set((out / "requests").iterdir())
    a_annotated, a_panels, a_records, a_status = alice.analyse(paths["astronaut_8bit.png"], "hirescam", "layer1", True)
    alice_files = {"annotated": a_annotated["url"], "panels": a_panels["url"], "records": a_records["url"]}
    alice_bytes = {}
    for what, file_url in alice_files.items():  # alice herself gets all of them
        code, alice_bytes[what] = alice.fetch(file_url)
        assert code == 200 and alice_bytes[what], what
    (alice_folder,) = set((out / "requests").iterdir()) - before
    Image.open(paths["astronaut_8bit.png"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        tmp_path / "image.png")  # the name every webcam snapshot has
    b_outputs = bob.analyse(tmp_path / "image.png")
    b_records_text = bob.fetch(b_outputs[2]["url"])[1].decode()
    assert str(out) not in b_records_text and str(work) not in b_records_text  # no server-absolute path

    # Every name bob can derive from his own outputs: his URLs and server paths with alice's file names
    # put in, their folders, the request folders his records name (his own, the ones beside it, alice's
    # exactly, found on the server's disk as a perfect guess would), and the --out tree itself.
    own = [b_outputs[0]["url"], b_outputs[1]["url"], b_outputs[2]["url"], b_outputs[0]["path"],
           b_outputs[2]["path"]]
    candidates = []
    for item in own:
        head = item.rsplit("/", 1)[0]
        candidates += [item, head, head.rsplit("/", 1)[0]]
        candidates += [f"{head}/{name}" for name in ("astronaut_8bit.png", "astronaut_8bit.jpeg", "image.jpeg",
                                                      "image.png", "image.webp", "predictions.jsonl",
                                                      "astronaut_8bit_annotated.jpg")]
    bob_record = json.loads(b_records_text.splitlines()[0])
    bob_folder = out / Path(bob_record["annotated"]).parent
    candidates += [str(bob_folder / "predictions.jsonl"), str(bob_folder / "image_annotated.jpg"),
                   str(alice_folder / "predictions.jsonl"), str(alice_folder / "astronaut_8bit_annotated.jpg"),
                   str(out), str(out / "requests"), str(out / "cache"), f"{out}/requests/../cache",
                   "requests/" + alice_folder.name + "/predictions.jsonl"]
    leaked = []
    for candidate in candidates:
        code, data = bob.fetch(candidate)
        if code == 200 and data in alice_bytes.values():
            leaked.append(candidate)
        if str(out / "requests") in candidate and candidate.count("/") > str(out).count("/") + 1:
            assert code in (403, 404), (candidate, code)  # request folders are never served
    assert not leaked
    assert (alice_folder / "predictions.jsonl").is_file()  # the files were there to be taken
    for file_url in alice_files.values():  # alice's own names share nothing with bob's
        assert file_url.rsplit("/", 2)[-2] not in json.dumps(b_outputs)




def test_astronaut_three_ways_then_a_text_file(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    url, work, lines, _ = server
    assert url.startswith("http://127.0.0.1:")
    assert any(line.startswith(f"model: {SHIPPED_MODEL}") for line in lines)  # says which model it took
    photos = astronaut_files(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("this is not a picture\n")
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture either\n")

    browser.get(url)
    for name in ("astronaut_8bit.png", "astronaut_16bit.png", "astronaut_rgba.png"):
        upload = wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"),
                          "the upload field")
        upload[0].send_keys(str(photos[name]))
        said = wait_for(browser, lambda: name in status(browser) and "face(s)" in status(browser) and status(browser),
                        f"the result of {name}")
        # the shipped model: happy, p 0.91, whatever the file's mode (gradio's conversion made 16-bit white)
        assert said.startswith(f"1 face(s) in {name} (512x512 px), numbered as on the photo: 1: happy"), said
        size = wait_for(browser, lambda: browser.execute_script(
            "const i = document.querySelector('#annotated img');"
            "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null;"),
            "the annotated photo")
        assert size == [512, 512]
        faces = wait_for(browser, lambda: browser.execute_script(
            "const i = document.querySelector('#faces img'); return i && i.complete && i.naturalWidth;"),
            "the face panel")
        assert faces > 500  # crop, explanation, attention map and bars side by side
        if name == "astronaut_8bit.png" and os.environ.get("SAVE_README_SCREENSHOT") == "1":
            browser.execute_script("window.scrollTo(0, 0)")
            shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
            shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(SCREENSHOT, optimize=True)  # a third of the bytes
        assert not browser.find_elements(By.CSS_SELECTOR, "button[aria-label*='Share'], button[title*='Share']")
        browser.find_element(By.CSS_SELECTOR, "#photo button[aria-label='Remove Image']").click()
        wait_for(browser, lambda: "Upload a photo" in status(browser), "the cleared page")
    assert "green tick marks a map" in browser.find_element(By.ID, "map-note").text

    # A .txt file: the page itself refuses it (gr.Image accepts image/*) and says so; no request is sent.
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(text))
    wait_for(browser, lambda: "Invalid file type: notes.txt" in browser.find_element(By.TAG_NAME, "body").text,
             "the page's file-type message")
    # The same text named .png passes the page's check: the app's own message, and the server goes on.
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(fake))
    said = wait_for(browser, lambda: "Could not analyse" in status(browser) and status(browser), "the error message")
    assert "fake.png is not an image this app can read" in said
    # said once, in the status line: no toast of the app's that would stay over the next result (the one
    # left is the page's own about notes.txt)
    toasts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']")]
    assert not [t for t in toasts if "fake.png" in t or "analyse" in t], toasts
    assert not browser.execute_script("const i = document.querySelector('#annotated img'); return i && i.src;")

    # offline: every resource the page loaded came from the app itself (no CDN, no fonts, no analytics)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(url.rstrip("/")) for r in resources), resources
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # nothing written outside --out


def test_the_app_benches_run_against_the_served_app(server, tmp_path, monkeypatch):
    """bench/app_latency.py --clients and bench/app_resources.py, on a few requests: they measure what they say."""
    url, work, _, running = server
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import app_latency
    import app_resources
    photo = astronaut_files(tmp_path)["astronaut_8bit.png"]
    times = app_latency.concurrent_requests(url, photo, clients=2, requests=3, warmup=0)
    assert len(times) == 3 and min(times) > 0
    (tmp_path / "fake.png").write_text("not a picture\n")
    figures = app_resources.measure(running, tmp_path, work / "out", [photo, tmp_path / "fake.png"], 3, bare_mb=1)
    assert figures["refused"] == 1 and 0 < figures["rss_start"] <= figures["rss_peak"]
    assert figures["rss_after"] <= figures["rss_peak"]
    assert figures["disk_after_bare_uploads"] >= figures["disk_start"] + 2.9  # three 1 MB uploads, counted
