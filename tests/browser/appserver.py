"""Serving the app for browser tests and the app benchmark: `streamlit run app.py` on a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict | None = None, timeout: float = 60) -> subprocess.Popen:
    """`streamlit run app.py` on ``port``; returns once /_stcore/health answers (raises if it never does).
    Its output goes to ``artifacts/streamlit-<port>.log`` (a pipe nobody reads would block the server)."""
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless",
           "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log_path = ROOT / "artifacts" / f"streamlit-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not answer on port {port} within {timeout} s: {log_path.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fresh_cache(folder: Path) -> str:
    """A PRUNE_CORE_CACHE in ``folder`` holding no similarity results; it links the converted models of the user's
    cache (when there are any) so that the default model is not converted again."""
    from prune_core.models import cache_dir

    folder.mkdir(parents=True, exist_ok=True)
    models = cache_dir() / "models"
    if models.is_dir():
        (folder / "models").symlink_to(models, target_is_directory=True)
    return str(folder)
