"""Callbacks from a SIP stack's thread never raise: `guard` runs one, logs and swallows what it
raises, and `clear_last_exception` drops what Python keeps of the last exception (its
traceback would keep pjsua2 objects alive on another thread). Shared by the engine's adapter
(`engine.telephony.pjsua`) and the test caller (`engine.telephony.caller`); imports no SIP
library.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)


def clear_last_exception() -> None:
    """An exception in a callback leaves `sys.last_*`, which would keep pjsua2 objects alive."""
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            with contextlib.suppress(AttributeError):
                delattr(sys, name)


def guard(where: str, func: Callable[[], None]) -> None:
    """Run `func`, log and swallow any exception (never let one reach pjsua2)."""
    try:
        func()
    except BaseException:
        # Log text, not exc_info: a LogRecord kept by a handler would keep the traceback's
        # frames, and with them pjsua2 objects, alive on another thread.
        log.error("pjsua callback %s failed:\n%s", where, traceback.format_exc().rstrip())
        clear_last_exception()
