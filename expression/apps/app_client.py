"""app.py from the outside: start it as a user does, and talk to it over HTTP as gradio_client does
(gradio's upload route and its /call API). Used by tests/test_app_browser.py and the app benches.

    from expression.apps.app_client import AppClient, serve
    with serve(["--checkpoint", "models/shipped/resnet34_fer2013_cpu.pt", "--workers", "2"], cwd=tmp) as server:
        photo, panels, records, status = AppClient(server.url).analyse(Path("photo.png"))
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    lines: list = field(default_factory=list)  # what app.py printed so far

    def rss_mib(self) -> tuple[float, float]:
        """(current, peak) resident memory of the app.py process in MiB (Linux /proc)."""
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]


@contextmanager
def serve(args, cwd, timeout: float = 90):
    """app.py with these arguments on a free 127.0.0.1 port, in `cwd`; stopped at the end of the block.
    RuntimeError with its output when it does not print its URL within `timeout` seconds."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(free_port()), *map(str, args)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while not any(line.startswith("app: running on") for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("app.py did not start:\n" + "".join(lines))
            time.sleep(0.3)
        url = next(line for line in lines if line.startswith("app: running on")).split()[3]
        yield Server(url, proc, lines)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class AppClient:
    """One user of the served app, with its own connection and cookies (httpx, a gradio dependency)."""

    def __init__(self, url: str, timeout: float = 300):
        import httpx
        self.base = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def upload(self, path: Path) -> str:
        with open(path, "rb") as f:
            response = self.http.post(f"{self.base}/gradio_api/upload", files={"files": (Path(path).name, f)})
        response.raise_for_status()
        return response.json()[0]  # where the server keeps it

    def analyse(self, path: Path, method: str = "none", layer: str = "layer1", attention: bool = False,
                whole_image: bool = False) -> list:
        """-> the page's four outputs: annotated photo, face panels, records (gradio file dicts with url
        and path, or None) and the status line's Markdown."""
        upload = {"path": self.upload(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}
        response = self.http.post(f"{self.base}/gradio_api/call/analyse",
                                  json={"data": [upload, method, layer, attention, whole_image]})
        response.raise_for_status()
        stream = self.http.get(f"{self.base}/gradio_api/call/analyse/{response.json()['event_id']}").text
        event = None
        for line in stream.splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "complete":
                return json.loads(line[5:])
        raise RuntimeError(f"no result for {Path(path).name}: {stream[-500:]}")

    def fetch(self, url_or_path: str) -> tuple[int, bytes]:
        """(status code, bytes) of a URL of the app, or of a server path through gradio's file route."""
        url = url_or_path if url_or_path.startswith("http") else f"{self.base}/gradio_api/file={url_or_path}"
        response = self.http.get(url)
        return response.status_code, response.content
