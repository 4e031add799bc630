"""`plixo serve --workers N`: a real server with N worker processes answering from the ledger."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from api.cli.main import app

REPO = Path(__file__).resolve().parents[2]


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes under ``pid`` (spawned: ``multiprocessing.spawn``)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                out.append(int(child))
    return out


def test_serve_starts_the_workers_it_is_asked_for(data_dir: Path, db_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = dict(os.environ, PLIXO_DATABASE_URL=db_url, PLIXO_DATA_DIR=str(data_dir))
    cmd = [sys.executable, "-c", "from api.cli.main import main; main()"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--port", str(port), "--workers", "2"],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/queue", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "plixo serve did not start"
                time.sleep(0.2)
        assert r.status_code == 401 and "Bearer" in r.json()["detail"]
        assert len(_workers(proc.pid)) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serve_refuses_a_worker_count_below_one(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--workers", "0"])
    assert result.exit_code != 0
    assert "--workers" in result.output
