"""The README's examples, run as they are written (issue 13, item 9).

Each fenced block of README.md is found by the text it contains, so editing an example edits
the test. What is changed before running, and only that: the documented ports (8922, 8923,
9000) become free ones, and `.venv/bin/` becomes this interpreter's environment.

- the `check-config` output block: a file with those three mistakes gives exactly that output;
- the complete YAML example: `check-config` accepts it once the two prompt files it names exist
  beside it (paths are relative to the configuration file), and names the resolved paths when
  they do not;
- the HTTP API examples: bash runs the block in the folder of a `vr-engine serve --demo` whose
  token was generated into `data/api-token` (no `VR_API_TOKEN` in its environment); then the
  receptionist it created answers a real call, with the uploaded greeting;
- the `dial` example against that engine;
- the action URL reply example and the receiving server (Python block): the server runs, and the
  engine's own action URL client, signing with the block's secret, gets the block's reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from engine.action_urls import ActionUrlClient, parse_reply
from engine.flow.events import ActionUrlFailed, ActionUrlReplied
from engine.model import ActionUrl
from tests.integration.engine_helpers import (
    Engine,
    Procs,
    engine_command,
    procs_in,
    summary_of,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def block(contains: str, lang: str | None = None) -> str:
    """The one fenced block of the README that contains `contains`."""
    found = [
        body
        for kind, body in re.findall(r"^```(\w*)\n(.*?)^```$", README, re.M | re.S)
        if contains in body and (lang is None or kind == lang)
    ]
    assert len(found) == 1, f"{len(found)} README blocks contain {contains!r}"
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_wav(path: Path, seconds: float, freq: float) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


# --- configuration -------------------------------------------------------------------------


def test_the_check_config_output_is_what_check_config_prints(tmp_path: Path) -> None:
    shown = block("error: vr.yaml has 3 error(s):")
    (tmp_path / "vr.yaml").write_text(
        "server: {timezone: Mars/Olympus}\n"
        'ivrs:\n  - {name: Main, extension_number: "8", pin: "512390"}\n'
    )
    run = subprocess.run(
        [*engine_command(), "check-config", "vr.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr + run.stdout == shown


def test_the_complete_example_passes_check_config(tmp_path: Path) -> None:
    example = block("ivrs:\n  - name: Main", "yaml")
    config = tmp_path / "conf" / "vr.yaml"
    config.parent.mkdir()
    config.write_text(example)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*engine_command(), "check-config", str(config)],
            cwd=elsewhere,  # not the config's folder: paths are relative to the file
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = check()
    assert missing.returncode == 2
    for name in ("main.wav", "hold.wav"):
        assert f"no such file: {config.parent / 'prompts' / name}" in missing.stderr
    (config.parent / "prompts").mkdir()
    write_wav(config.parent / "prompts" / "main.wav", 1.5, 440)
    write_wav(config.parent / "prompts" / "hold.wav", 1.0, 660)
    passed = check()
    assert passed.returncode == 0, passed.stderr
    # and it says what it is: the receptionists of the example, its server name
    data = yaml.safe_load(example)
    assert data["server"]["name"] == "vr-1" and data["ivrs"][0]["extension_number"] == "800"


# --- a served engine -----------------------------------------------------------------------


@dataclass
class Served:
    procs: Procs
    engine: Engine
    folder: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`vr-engine serve --demo` in a folder of its own, data in `./data`, the token generated."""
    folder = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as patch, procs_in(folder) as procs:
        patch.delenv("VR_API_TOKEN", raising=False)
        proc = procs.start(
            [
                *engine_command(),
                "serve",
                "--demo",
                "--data-dir",
                str(folder / "data"),
                "--sip-port",
                "0",
                "--http-port",
                "0",
            ],
            name="readme-engine",
        )
        line = proc.wait_line("vr-engine ready:", 30)
        sip = int(line.split("SIP ", 1)[1].split(",", 1)[0].rsplit(":", 1)[1])
        http = int(line.split("HTTP http://", 1)[1].split(",", 1)[0].rsplit(":", 1)[1])
        assert (folder / "data" / "api-token").is_file()
        yield Served(procs, Engine(proc, sip, http, folder / "data"), folder)


def on_ports(text: str, served: Served) -> str:
    return text.replace("127.0.0.1:8922", f"127.0.0.1:{served.engine.sip_port}").replace(
        "127.0.0.1:8923", f"127.0.0.1:{served.engine.http_port}"
    )


def api_get(served: Served, path: str) -> Any:
    import httpx

    token = (served.folder / "data" / "api-token").read_text().strip()
    response = httpx.get(
        f"http://127.0.0.1:{served.engine.http_port}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()


def test_the_http_api_examples_run_as_written(served: Served) -> None:
    if shutil.which("curl") is None or shutil.which("sox") is None:
        pytest.fail("the README's API examples need curl and sox (.ci/run installs them)")
    script = on_ports(block("export VR_API_TOKEN=$(cat data/api-token)", "sh"), served)
    env = {k: v for k, v in os.environ.items() if k != "VR_API_TOKEN"}
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=served.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    ivr_id = re.search(r"^receptionist (\S+)$", run.stdout, re.M)
    file_id = re.search(r"^file (\S+)$", run.stdout, re.M)
    assert ivr_id and file_id, run.stdout
    # what the block did is in the server
    ivr = api_get(served, f"/api/ivrs/{ivr_id[1]}")
    assert ivr["extension_number"] == "810" and ivr["language"] == "de-DE"
    assert ivr["prompt_file_id"] == file_id[1] and ivr["prompt_file_name"] == "hello.wav"
    status = json.loads(run.stdout.strip().splitlines()[-1])
    assert status["status"] == "ONLINE" and status["capacity"] >= 1
    # and 810 answers a real call (the dial example's caller), playing the uploaded tone
    heard = served.folder / "810.wav"
    caller = served.procs.start(
        [
            *engine_command(),
            "dial",
            "--target",
            f"sip:810@127.0.0.1:{served.engine.sip_port}",
            "--hangup-after",
            "2.5",
            "--record",
            str(heard),
            "--duration",
            "15",
        ],
        name="readme-810",
    )
    summary = summary_of(caller)
    assert summary["answered"] is True, summary
    samples, rate = sf.read(heard, dtype="float32")
    spectrum = np.abs(np.fft.rfft(samples[: rate * 2]))
    assert abs(np.argmax(spectrum) * rate / len(samples[: rate * 2]) - 440) < 10


def test_the_dial_example_runs(served: Served) -> None:
    command = next(
        line for line in block("vr-engine dial --target", "sh").splitlines() if "dial" in line
    )
    command = on_ports(command, served).replace(".venv/bin/vr-engine", engine_command()[0])
    if len(engine_command()) > 1:  # no console script: python -m engine.cli
        command = command.replace(engine_command()[0], " ".join(engine_command()), 1)
    started = time.monotonic()
    run = subprocess.run(
        f"{command} --duration 8",
        shell=True,
        cwd=served.folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["answered"] is True and summary["refer_to"], summary  # key 2 → 202
    assert summary["refer_to"].startswith("sip:202@"), summary
    assert (served.folder / "heard.wav").stat().st_size > 44
    assert time.monotonic() - started < 60


# --- action URLs -----------------------------------------------------------------------------


def test_the_reply_example_is_a_valid_reply() -> None:
    reply = block('"action": "call"', "json")
    assert parse_reply(reply.encode()) == ("call", "222")


@dataclass
class Facts:
    from_number: str = "+4930123456"
    to: str = "800"
    from_name: str = "Alice"
    account_name: str = "800"
    session_id: str = "readme-1"


def test_the_receiving_server_answers_the_engines_signed_requests(tmp_path: Path) -> None:
    code = block("HTTPServer((", "python")
    secret = re.search(r'SECRET = b"([^"]+)"', code)
    assert secret, "the example has a SECRET"
    port = free_port()
    assert code.count("9000") == 1
    server_file = tmp_path / "route.py"
    server_file.write_text(code.replace("9000", str(port)))
    server = subprocess.Popen([sys.executable, str(server_file)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the example server did not listen"
                time.sleep(0.1)

        def url(signing_secret: str) -> ActionUrl:
            return ActionUrl.model_validate(
                {
                    "name": "crm",
                    "type": "DTMF",
                    "method": "POST",
                    "url": f"http://127.0.0.1:{port}/route",
                    "signing_secret": signing_secret,
                }
            )

        async def ask() -> list[ActionUrlReplied | ActionUrlFailed]:
            async with ActionUrlClient() as client:
                return [
                    await client.request(
                        url(key), Facts(), digits, request_id=1, now=lambda: datetime.now(UTC)
                    )
                    for key, digits in (
                        (secret[1], "5123"),
                        (secret[1], "7"),
                        ("a-different-secret-of-16+", "5123"),
                    )
                ]

        five, seven, forged = asyncio.run(ask())
        assert isinstance(five, ActionUrlReplied) and five.destination == "222", five
        assert isinstance(seven, ActionUrlReplied) and seven.destination == "100", seven
        assert isinstance(forged, ActionUrlFailed) and forged.http_status == 403, forged
    finally:
        server.terminate()
        server.wait(10)
