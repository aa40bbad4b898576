"""A tiny receptionist for the telephony integration tests (run as its own process).

Starts `PjsuaTelephony` on an ephemeral port with an asyncio loop and prints one JSON line per
event on stdout (first line: `{"event": "ready", "port": …}`). It answers every call, plays
`--prompt` once the call is confirmed, transfers to `--transfer-to` on digit 9, hangs up on
`#` (8 transfers to `--transfer-to-alt`), hangs up after a final 2xx transfer result, and 0.3 s
after each `CallDisconnected` prints `{"event": "counts", …}` from `debug_counts()` (right after
each `DtmfDigit` too, as `{"event": "counts_at_dtmf", …}`). With `--enforce-limit N` it rejects
calls beyond N (or `max_calls`) with 503, as the runtime does. SIGTERM (or stdin closing) stops
it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import stat
import sys
from pathlib import Path

from engine.admission import AdmissionCounters
from engine.telephony.base import (
    CallConfirmed,
    CallDisconnected,
    DtmfDigit,
    IncomingCall,
    TelephonyEvent,
    TransferStatus,
)
from engine.telephony.pjsua import PjsuaTelephony, SipSettings


def out(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    admission = AdmissionCounters(None)  # the door's, taken as the runtime takes them
    tel = PjsuaTelephony(
        SipSettings(
            host=args.host,
            port=args.port,
            max_calls=args.max_calls,
            log_level=args.log_level,
            rtp_port=args.rtp_port,
        ),
        admission,
    )
    active: set[str] = set()
    stop = asyncio.Event()

    def counts_later() -> None:
        out({"event": "counts", **tel.debug_counts()})

    def on_event(ev: TelephonyEvent) -> None:
        out({"event": type(ev).__name__, **dataclasses.asdict(ev)})
        if isinstance(ev, DtmfDigit):  # the adapter's tables as of its last loop turn
            out({"event": "counts_at_dtmf", **tel.debug_counts()})
        match ev:
            case IncomingCall(call_id=cid):
                admission.take_charged(ev.sip_call_id)  # as the runtime does
                if args.enforce_limit and len(active) >= min(args.enforce_limit, tel.max_calls):
                    tel.reject(cid, 503, "Service Unavailable")
                    return
                active.add(cid)
                if args.prompt and args.play_on == "incoming":
                    tel.play(cid, 1, [Path(args.prompt)])  # before media: starts with it
                if args.answer_delay > 0:
                    loop.call_later(args.answer_delay, tel.answer, cid)
                else:
                    tel.answer(cid)
            case CallConfirmed(call_id=cid):
                if args.prompt and args.play_on == "confirmed":
                    tel.play(cid, 1, [Path(args.prompt)])
            case DtmfDigit(call_id=cid, digit="9") if args.transfer_to:
                tel.stop_playback(cid)
                tel.transfer(cid, args.transfer_to)
            case DtmfDigit(call_id=cid, digit="8") if args.transfer_to_alt:
                tel.stop_playback(cid)
                tel.transfer(cid, args.transfer_to_alt)
            case DtmfDigit(call_id=cid, digit="#"):
                tel.hangup(cid)
            case TransferStatus(call_id=cid, sip_code=code, final=True) if 200 <= code < 300:
                tel.hangup(cid)
            case CallDisconnected(call_id=cid):
                active.discard(cid)
                loop.call_later(0.3, counts_later)
            case _:
                pass

    tel.start(loop, on_event)
    out({"event": "ready", "port": tel.bound_port, "max_calls": tel.max_calls})
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):  # the test holds a pipe: EOF = stop
        loop.add_reader(sys.stdin.fileno(), lambda: None if sys.stdin.readline() else stop.set())
    try:
        await stop.wait()
    finally:
        await loop.run_in_executor(None, tel.stop, 2.0)
        out({"event": "stopped", **tel.debug_counts()})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1", help="address to bind and publish (::1 too)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--prompt")
    p.add_argument("--transfer-to", help="REFER target on digit 9")
    p.add_argument("--transfer-to-alt", help="REFER target on digit 8")
    p.add_argument("--play-on", choices=("confirmed", "incoming"), default="confirmed")
    p.add_argument("--answer-delay", type=float, default=0.0)
    p.add_argument("--rtp-port", type=int, default=0, help="0 = random RTP ports")
    p.add_argument("--max-calls", type=int, default=1000)
    p.add_argument("--enforce-limit", type=int, default=0, help="reject above N calls with 503")
    p.add_argument("--log-level", type=int, default=1)
    p.add_argument("--debug", action="store_true", help="adapter debug logs on stderr")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        stream=sys.stderr,
        format="server %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
