"""Real SIP scanners against a real `vr-engine serve` (issue 13, item 2): sipvicious' svmap
(OPTIONS, also in compact form without a User-Agent) and svwar (extension enumeration by
INVITE, also compact) find nothing — not even extension 800, which exists — and an ordinary
request's answer names no product (no User-Agent/Server header by default)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.engine_helpers import Engine, procs_in, start_engine

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("svmap") is None, reason="sipvicious is not installed"),
]

CONFIG = {"server": {"name": "vr-scan"}, "ivrs": [{"name": "Main", "extension_number": "800"}]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with procs_in(tmp_path_factory.mktemp("scanners")) as procs:
        yield start_engine(procs, CONFIG, name="engine-scan")


def run_tool(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=90)
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("svmap",),
        ("svmap", "-c"),
        ("svmap", "-m", "INVITE"),
        ("svwar", "-m", "INVITE", "-e", "799-801"),
        ("svwar", "-c", "-m", "INVITE", "-e", "799-801"),
        ("svwar", "-m", "OPTIONS", "-e", "799-801"),
    ],
    ids=" ".join,
)
def test_sipvicious_finds_nothing(engine: Engine, args: tuple[str, ...]) -> None:
    out = run_tool(*args, "127.0.0.1", "-p", str(engine.sip_port))
    assert "found nothing" in out, out
    assert "800" not in out and "vr-engine" not in out, out


def test_an_ordinary_request_s_answer_names_no_product(engine: Engine) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:800@127.0.0.1:{engine.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKprobe7f3a;rport\r\n"
            "Max-Forwards: 70\r\nTo: <sip:800@127.0.0.1>\r\n"
            "From: <sip:pbx@127.0.0.1>;tag=p1\r\nCall-ID: product-probe\r\n"
            "CSeq: 1 OPTIONS\r\nUser-Agent: PortSIP PBX\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), ("127.0.0.1", engine.sip_port))
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("SIP/2.0 200"), answer
    headers = answer.split("\r\n\r\n", 1)[0].lower()
    assert "\r\nuser-agent:" not in headers and "\r\nserver:" not in headers, answer
    assert "vr-engine" not in answer.lower() and "pjsip" not in answer.lower(), answer
