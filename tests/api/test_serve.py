"""``legato serve`` as an operator runs it: a real process on a free port with a SQLite
file, answering /health and /ready, and honouring the token it prints in dev mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _legato() -> Path:
    for candidate in (ROOT / ".venv" / "bin" / "legato", Path(sys.executable).parent / "legato"):
        if candidate.is_file():
            return candidate
    pytest.skip("the legato script is not installed (pip install -e .)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGATO_")}
    env.update({"LEGATO_POLL_INTERVAL": "0.05", **extra})
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(_legato()),
            "serve",
            "--dev",
            "--db",
            str(tmp_path / "legato.db"),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = None
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while token is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("dev token: "):
                token = line.removeprefix("dev token: ").strip()
        assert token, "legato serve --dev printed no token"
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, token, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)  # drains and closes the pipes
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_serve_answers_health_and_ready_and_accepts_its_dev_token(
    server: tuple[str, str, subprocess.Popen[str]],
) -> None:
    base, token, proc = server
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "Legato"

    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/api/v1/workflows/definitions").status_code == 401
    created = httpx.post(
        f"{base}/api/v1/workflows/definitions",
        headers={**headers, "Content-Type": "application/yaml"},
        content="name: hello\nsteps:\n  - {id: greet, type: log, config: {message: hi}}\n",
    )
    assert created.status_code == 201, created.text
    assert created.json()["tenant_id"] == "default"
    triggered = httpx.post(
        f"{base}/api/v1/workflows/definitions/{created.json()['id']}/trigger",
        headers=headers,
        json={"trigger_data": {"name": "Ada"}},
    )
    assert triggered.status_code == 202
    execution = triggered.json()["execution_id"]
    deadline = time.monotonic() + 15
    while True:
        view = httpx.get(f"{base}/api/v1/workflows/executions/{execution}", headers=headers)
        if view.json()["status"] == "completed":
            break
        assert time.monotonic() < deadline, view.text
        time.sleep(0.1)

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0


def test_serve_refuses_to_start_without_a_way_to_check_tokens(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(_legato()), "serve", "--db", str(tmp_path / "legato.db"), "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "LEGATO_API_JWT_SECRET" in result.stderr
    assert "--dev" in result.stderr
