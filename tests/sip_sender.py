"""Send `tests.sip_corpus` messages to a SIP server over UDP and TCP and count its answers.

Used by the robustness test and `bench/sip_hostile.py`. Bounded in time: UDP is paced, TCP
connections are few at a time, every read has a deadline. Loopback only in our use.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.sip_corpus import KINDS, Target, corpus, reinvite, request, sample, sdp

STATUS_RE = re.compile(rb"^SIP/2\.0 (\d{3})")
CALL_ID_RE = re.compile(rb"\r\n(?:Call-ID|i):\s*(\S+)", re.IGNORECASE)
CSEQ_RE = re.compile(rb"\r\n(?:CSeq|cseq|CSEQ):\s*\d+\s+(\S+)")


def status_of(data: bytes) -> str:
    match = STATUS_RE.match(data)
    return match.group(1).decode() if match else "other"


def answer_of(data: bytes) -> str:
    """ "<status> <CSeq method>" of a response, e.g. "403 INVITE"."""
    match = CSEQ_RE.search(data)
    method = match.group(1).decode("ascii", "replace")[:20] if match else "?"
    return f"{status_of(data)} {method}"


@dataclass
class Tally:
    sent: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # status code → responses seen
    methods: Counter[str] = field(default_factory=Counter)  # "<status> <CSeq method>" → seen
    answered: set[bytes] = field(default_factory=set)  # Call-IDs of INVITEs answered 200
    errors: Counter[str] = field(default_factory=Counter)  # e.g. TCP reset by the server
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.by_kind.update(other.by_kind)
        self.answers.update(other.answers)
        self.methods.update(other.methods)
        self.answered |= other.answered
        self.errors.update(other.errors)
        self.seconds += other.seconds


def udp_socket(source_host: str) -> socket.socket:
    """A non-blocking UDP socket on `source_host` with room for the engine's answers (a 404
    to an INVITE with 900 Vias repeats them all: ~50 KB a datagram)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((source_host, 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, tally: Tally) -> None:
    """Count every response waiting on a non-blocking UDP socket."""
    while True:
        try:
            data = sock.recv(70_000)
        except (BlockingIOError, ConnectionRefusedError):
            return
        tally.answers[status_of(data)] += 1
        tally.methods[answer_of(data)] += 1
        if answer_of(data) == "200 INVITE" and (match := CALL_ID_RE.search(data)):
            tally.answered.add(match.group(1))


def send_udp(
    host: str,
    port: int,
    count: int,
    seed: int,
    *,
    source_host: str = "127.0.0.2",
    rate: float = 400.0,
    linger: float = 1.0,
) -> Tally:
    """`count` corpus messages (those that fit a datagram), paced at `rate` a second."""
    tally = Tally()
    start = time.monotonic()
    with udp_socket(source_host) as sock:
        target = Target(host, port, source_host, sock.getsockname()[1], transport="UDP")
        for i, sample in enumerate(s for s in corpus(count * 2, seed, target) if s.fits_udp()):
            if tally.sent >= count:
                break
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                sock.sendto(sample.data, (host, port))
            except OSError as error:
                tally.errors[type(error).__name__] += 1
                continue
            tally.sent += 1
            tally.by_kind[sample.kind] += 1
            drain(sock, tally)
        end = time.monotonic() + linger
        while time.monotonic() < end:
            time.sleep(0.05)
            drain(sock, tally)
    tally.seconds = time.monotonic() - start
    return tally


async def _tcp_one(
    host: str, port: int, source_host: str, make: Callable[[Target], bytes], tally: Tally
) -> None:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source_host, 0)), 5.0
        )
    except (OSError, TimeoutError) as error:
        tally.errors[f"connect {type(error).__name__}"] += 1
        return
    try:
        local_port = writer.get_extra_info("sockname")[1]
        data = make(Target(host, port, source_host, local_port, transport="TCP"))
        writer.write(data)
        await writer.drain()
        tally.sent += 1
        buffer = b""
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(70_000), left)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
        for part in buffer.split(b"SIP/2.0 ")[1:]:
            tally.answers[status_of(b"SIP/2.0 " + part)] += 1
            tally.methods[answer_of(b"SIP/2.0 " + part)] += 1
    except (OSError, TimeoutError) as error:
        tally.errors[type(error).__name__] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


def send_tcp(
    host: str,
    port: int,
    count: int,
    seed: int,
    *,
    source_host: str = "127.0.0.2",
    concurrency: int = 16,
) -> Tally:
    """`count` corpus messages, each on a connection of its own, `concurrency` at a time."""
    tally = Tally()
    start = time.monotonic()

    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                await _tcp_one(
                    host,
                    port,
                    source_host,
                    lambda target: sample(index, seed, target).data,
                    tally,
                )

        await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(run())
    tally.by_kind.update(KINDS[i % len(KINDS)].__name__ for i in range(count))
    tally.seconds = time.monotonic() - start
    return tally


# --- a dialog of our own, for re-INVITEs that change the media ----------------------------------


@dataclass
class DialogResult:
    invite_status: str
    reinvite_statuses: list[str]
    bye_status: str


def _wait_final(sock: socket.socket, call_id: str, cseq_method: str, timeout: float) -> bytes:
    """The first final response (>= 200) of this Call-ID and CSeq method, or b"" on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(70_000)
        except (BlockingIOError, ConnectionRefusedError):
            time.sleep(0.01)
            continue
        code = status_of(data)
        if code == "other" or int(code) < 200:
            continue
        if call_id.encode() in data and f" {cseq_method}\r\n".encode() in data:
            return data
    return b""


def _header(data: bytes, name: str) -> str:
    for line in data.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def dialog_with_reinvites(
    host: str, port: int, extension: str, reinvites: int, seed: int, *, source_host: str
) -> DialogResult:
    """INVITE `extension` over UDP, ACK the 200, send re-INVITEs that move or change the media
    (ACKing each 2xx), then BYE. Statuses as strings ("timeout" when none came)."""
    rng = random.Random(seed)
    with udp_socket(source_host) as sock:
        t = Target(host, port, source_host, sock.getsockname()[1], transport="UDP")
        call_id_full = f"reinv-{rng.randrange(10**12)}@fuzz"
        from_tag = f"f{rng.randrange(10**9)}"
        invite = request(
            rng,
            t,
            user=extension,
            body=sdp(rng, source_host),
            call_id=call_id_full,
            from_user="9999",
            from_tag=from_tag,
        )
        sock.sendto(invite, (host, port))
        final = _wait_final(sock, call_id_full, "INVITE", 10.0)
        if not final:
            return DialogResult("timeout", [], "")
        status = status_of(final)
        if status != "200":
            return DialogResult(status, [], "")
        to_tag = _header(final, "To").split("tag=", 1)[1].split(";")[0]

        def send_in_dialog(method: str, cseq: int, via: str = "") -> None:
            branch = f"z9hG4bK{rng.randrange(10**12)}"
            lines = [
                f"{method} sip:{extension}@{t.hostport} SIP/2.0",
                f"Via: {via or f'SIP/2.0/UDP {source_host}:{t.source_port};branch={branch}'}",
                "Max-Forwards: 70",
                f"From: <sip:9999@{source_host}>;tag={from_tag}",
                f"To: <sip:{extension}@{t.hostport}>;tag={to_tag}",
                f"Call-ID: {call_id_full}",
                f"CSeq: {cseq} {method}",
                "Content-Length: 0",
            ]
            sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (host, port))

        send_in_dialog("ACK", 1)
        statuses = []
        for n in range(reinvites):
            cseq = 2 + n
            message = reinvite(
                rng,
                t,
                user=extension,
                call_id=call_id_full,
                from_tag=from_tag,
                to_tag=to_tag,
                cseq=cseq,
            )
            sock.sendto(message, (host, port))
            answer = _wait_final(sock, call_id_full, "INVITE", 5.0)
            code = status_of(answer) if answer else "timeout"
            statuses.append(code)
            if code == "200":
                send_in_dialog("ACK", cseq)
            elif answer:
                # a non-2xx final is ACKed in its transaction: the re-INVITE's Via (branch)
                via = _header(message, "Via")
                send_in_dialog("ACK", cseq, via=via)
            time.sleep(0.05)
        bye_cseq = 2 + reinvites
        send_in_dialog("BYE", bye_cseq)
        answer = _wait_final(sock, call_id_full, "BYE", 5.0)
        return DialogResult(status, statuses, status_of(answer) if answer else "timeout")
