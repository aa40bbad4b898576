"""Crash safety with a real server process: clients stream POSTs creating receptionists (and
action URLs), the server is killed with SIGKILL mid-stream, and the reopened store holds every
write that got a 2xx, passes `PRAGMA integrity_check`, and validates.

Run as a script (`python -m tests.test_api_crash DATA_DIR`), this module is that server: the
API on uvicorn on an ephemeral loopback port (printed as a JSON line), on a real store in
DATA_DIR, with a runtime on a telephony fake.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.store import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "crash-test-token"
PIN = "135790"


def serve(data_dir: Path) -> None:
    import uvicorn

    from engine.api import create_app
    from tests.test_api_helpers import make_runtime

    store = Store.open(data_dir)
    app = create_app(make_runtime(), token=TOKEN, is_serving=lambda: True, store=store)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    )
    asyncio.run(server.serve(sockets=[sock]))


def _read_port(proc: subprocess.Popen[str], timeout: float) -> int:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line.startswith("{"):
            return int(json.loads(line)["port"])
    raise AssertionError("the server did not start")


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stderr = (tmp_path / "server.stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_api_crash", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acknowledged: dict[str, str] = {}
    acknowledged_urls: dict[str, str] = {}
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        base = f"http://127.0.0.1:{_read_port(proc, 20)}"

        def client_loop(worker: int) -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
                for n in range(100_000):
                    if stop.is_set():
                        return
                    extension = f"{worker + 1}{n:05d}"
                    try:
                        response = client.post(
                            "/api/ivrs",
                            json={
                                "name": f"R{extension}",
                                "extension_number": extension,
                                "pin": PIN,
                            },
                        )
                        if response.status_code == 201:
                            rid = response.json()["id"]
                            with lock:
                                acknowledged[rid] = extension
                            url = client.post(
                                f"/api/ivrs/{rid}/action_urls",
                                json={
                                    "name": "crm",
                                    "type": "CALLER",
                                    "url": "http://127.0.0.1:9/x",
                                },
                            )
                            if url.status_code == 201:
                                with lock:
                                    acknowledged_urls[url.json()["id"]] = rid
                    except httpx.HTTPError as error:
                        with lock:
                            failures.append(type(error).__name__)
                        return

        workers = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
        for thread in workers:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 120 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the server died by itself"
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the clients are still posting
        proc.wait(timeout=10)
        for thread in workers:
            thread.join(timeout=15)
        stop.set()
    finally:
        stop.set()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        stderr.close()

    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 120
    assert len(failures) == 4, "every client sees the server go away"

    with sqlite3.connect(data_dir / "vr-engine.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store.open(data_dir)
    try:
        assert store.integrity_check() == "ok"
        for rid, extension in acknowledged.items():
            stored = store.get_receptionist(rid)
            assert stored is not None, f"acknowledged receptionist {rid} lost"
            assert stored.doc["extension_number"] == extension
            assert PIN not in json.dumps(stored.doc)
        stored_urls = {url.id for rid in acknowledged for url in store.list_action_urls(rid)}
        assert set(acknowledged_urls) <= stored_urls
        snapshot = store.snapshot()
        assert set(acknowledged.values()) <= set(snapshot.receptionists)
    finally:
        store.close()


def main(argv: list[str]) -> Any:
    serve(Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
