"""The demo receptionist: what `vr-engine serve --demo` (or no configuration) answers on 800.

Press 1 for extension 201 (voicemail out of hours), 2 for 202, 0 for DISA (PIN 135790,
destinations 3-5 digits), or dial an extension of 3-64 digits starting with 3-9 directly;
5000-5099 is blocked. A menu rule fires as soon as the digits equal it (SPEC §5), so 1, 2 and 0
are taken at the first key: an extension starting with them cannot be dialled from this menu.
"""

from __future__ import annotations

from typing import Any

DEMO_EXTENSION = "800"
DEMO_PIN = "135790"  # the demo's documented PIN; serve a real configuration in production


def demo_receptionist() -> dict[str, Any]:
    return {
        "name": "Demo receptionist",
        "extension_number": DEMO_EXTENSION,
        "language": "en-US",
        "dtmf_interval": 2,
        "enable_pin": True,
        "pin": DEMO_PIN,
        "exclude_list": "5000-5099",  # reachable: 1, 2 and 0 are menu keys
        "timeout_forward_rule": {"timeout": 10, "repeat_times": 2, "action": "HANGUP"},
        "failure_forward_rule": {"action": "REPEAT"},
        "night_mode_forward_rule": {"action": "HANGUP"},
        "custom_forward_rules": [
            {
                "user_input": "1",
                "office_hours": {"mode": "GLOBAL"},
                "office_hours_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "201"},
                "non_office_hours_forward_rule": {
                    "action": "FORWARD_TO_VOICEMAIL",
                    "number": "201",
                },
            },
            {
                "user_input": "2",
                "office_hours_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "202"},
            },
            {"user_input": "0", "office_hours_forward_rule": {"action": "DISA"}},
        ],
    }


def with_demo_receptionist(data: Any) -> Any:
    """`data` (a parsed configuration) plus the demo receptionist, unless 800 is taken."""
    data = dict(data) if isinstance(data, dict) else {}
    ivrs = list(data.get("ivrs") or [])
    taken = {str(i.get("extension_number")) for i in ivrs if isinstance(i, dict)}
    if DEMO_EXTENSION not in taken:
        ivrs.append(demo_receptionist())
    data["ivrs"] = ivrs
    return data
