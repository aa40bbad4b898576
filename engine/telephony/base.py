"""What the runtime needs from a SIP stack: events out, commands in.

This module owns the vocabulary between `engine.runtime` and a telephony adapter. It imports
no SIP library; `engine.telephony.pjsua` implements `Telephony` on pjsua2, and tests of the
runtime may implement it in memory.

Threading contract: an adapter delivers every event on the asyncio loop it was started with
(by `loop.call_soon_threadsafe`), in the order the SIP stack produced them, and its command
methods may be called from that loop at any time; they never block on the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from engine.flow.events import DtmfMethod

CallId = str


@dataclass(frozen=True, kw_only=True)
class IncomingCall:
    """An INVITE arrived; the call waits (100 Trying sent) for `answer` or `reject`."""

    call_id: CallId
    request_user: str  # user part of the Request-URI: the receptionist extension
    from_user: str  # caller number (user part of From)
    from_display: str  # caller display name, "" if none
    source_host: str  # IP address the INVITE came from
    source_port: int
    transport: Literal["udp", "tcp", "tls"]
    session_id: str | None  # X-Session-ID header of the PBX, if present
    user_agent: str  # User-Agent header, "" if none
    offer_problem: str | None = None  # why the INVITE's SDP offer cannot be served (→ 488)
    sip_call_id: str = ""  # the Call-ID header (admission finds what the door charged by it)
    from_header: str = ""  # From and Contact as sent: admission reads scanner fingerprints
    contact: str = ""


@dataclass(frozen=True, kw_only=True)
class CallConfirmed:
    """The call is answered and confirmed (ACK received): media may flow. `media` is False
    when no audio stream was negotiated (an INVITE without an offer whose ACK carried no
    answer): nothing can be played on such a call."""

    call_id: CallId
    media: bool = True


@dataclass(frozen=True, kw_only=True)
class StrayAck:
    """An ACK with this call's SIP Call-ID but no To tag came from `source_host` (None when
    unread): it matches no dialog, so if the call is still waiting for its ACK it can never
    be confirmed (PROTOS c07-sip's teardown ACKs are such)."""

    call_id: CallId
    source_host: str | None


@dataclass(frozen=True, kw_only=True)
class DtmfDigit:
    """One key press, reported exactly once whatever the transport."""

    call_id: CallId
    digit: str  # one of 0-9 * # A-D
    method: DtmfMethod


@dataclass(frozen=True, kw_only=True)
class PlaybackFinished:
    """The prompt sequence started by `play(play_id=…)` played to its end (not on stop)."""

    call_id: CallId
    play_id: int


@dataclass(frozen=True, kw_only=True)
class TransferStatus:
    """A REFER result: the REFER's own rejection, or a NOTIFY sipfrag status."""

    call_id: CallId
    sip_code: int
    reason: str
    final: bool


@dataclass(frozen=True, kw_only=True)
class CallDisconnected:
    """The call is gone (BYE either way, CANCEL, failure). Always the last event of a call:
    no TransferStatus or PlaybackFinished follows it. A call the runtime rejected ends with
    `CallDisconnected(sip_code=<the reject code>, by_remote=False)`."""

    call_id: CallId
    sip_code: int
    reason: str
    by_remote: bool


TelephonyEvent = (
    IncomingCall
    | CallConfirmed
    | StrayAck
    | DtmfDigit
    | PlaybackFinished
    | TransferStatus
    | CallDisconnected
)
EventSink = Callable[[TelephonyEvent], None]


class Telephony(Protocol):
    """Commands the runtime sends to a call. Unknown or finished call ids are ignored."""

    @property
    def max_calls(self) -> int:
        """Calls the runtime may answer at once (from the SIP stack's compile-time limit);
        the runtime refuses more with its own 503."""
        ...

    @property
    def bound_port(self) -> int:
        """The SIP port listened on (the chosen one when 0 was asked for)."""
        ...

    def start(self, loop: asyncio.AbstractEventLoop, sink: EventSink) -> None:
        """Start serving; events go to `sink` on `loop`. Blocks until SIP listens."""
        ...

    def stop(self, grace: float) -> None:
        """Hang up every call (waiting up to `grace` s for them to end) and shut down."""
        ...

    def answer(self, call_id: CallId) -> None: ...

    def reject(
        self, call_id: CallId, sip_code: int, reason: str, *, retry_after: int | None = None
    ) -> None:
        """Answer the INVITE with a final `sip_code` (3xx-6xx), with `Retry-After` if given."""
        ...

    def play(self, call_id: CallId, play_id: int, files: Sequence[Path]) -> None:
        """Stop whatever plays on the call, then play `files` one after another, once."""
        ...

    def stop_playback(self, call_id: CallId) -> None: ...

    def transfer(self, call_id: CallId, refer_to: str) -> None:
        """Blind transfer: send REFER with this Refer-To URI (`sip:…`)."""
        ...

    def hangup(self, call_id: CallId) -> None: ...
