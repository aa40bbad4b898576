"""Which forward rule of a menu entry applies at a given moment: holidays, then office hours.

Times are evaluated as wall-clock time in the server's time zone (`zoneinfo`), so office hours
follow daylight-saving changes. The caller resolves the zone (a `zoneinfo.ZoneInfo`):
this module reads no files. A GLOBAL menu rule uses the server's office hours; a server
without office hours is open around the clock.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo

from engine.model import (
    Holiday,
    MenuForwardRule,
    MenuRule,
    OfficeHoursMode,
    WeeklySchedule,
    parse_clock,
)


def is_holiday(holiday: Holiday, day: date) -> bool:
    """Whether `day` falls within `holiday` (inclusive; `--MM-DD` repeats every year)."""
    end = holiday.end or holiday.start
    if holiday.start.startswith("--"):
        key = day.strftime("--%m-%d")
        if holiday.start <= end:
            return holiday.start <= key <= end
        return key >= holiday.start or key <= end  # wraps over new year: --12-24 .. --01-02
    return date.fromisoformat(holiday.start) <= day <= date.fromisoformat(end)


def is_open(schedule: WeeklySchedule, local: datetime) -> bool:
    """Whether the local wall-clock time `local` is inside `schedule`'s office hours."""
    day = schedule.day(local.weekday())
    if not day.enabled:
        return False
    now = local.time().replace(tzinfo=None)
    return any(
        parse_clock(r.from_) <= now and (now < parse_clock(r.to) or r.to == "24:00")
        for r in day.ranges
    )


def choose_forward_rule(
    rule: MenuRule,
    at: datetime,
    *,
    tz: tzinfo,
    global_hours: WeeklySchedule | None,
    holidays: list[Holiday],
) -> tuple[MenuForwardRule, str]:
    """The forward rule of `rule` that applies at instant `at`, and why.

    Reasons: ``holiday``, ``office_hours``, ``non_office_hours``. A missing
    holiday or non-office-hours rule falls back to the next one down.
    """
    local = at.astimezone(tz)
    referenced = [h for h in holidays if h.name in rule.holidays]
    if any(is_holiday(h, local.date()) for h in referenced):
        chosen = rule.holiday_forward_rule or rule.non_office_hours_forward_rule
        if chosen is not None:
            return chosen, "holiday"
    if rule.office_hours.mode is OfficeHoursMode.CUSTOM:
        schedule: WeeklySchedule | None = rule.office_hours
    else:
        schedule = global_hours
    if schedule is None or is_open(schedule, local):
        return rule.office_hours_forward_rule, "office_hours"
    if rule.non_office_hours_forward_rule is None:
        return rule.office_hours_forward_rule, "office_hours"
    return rule.non_office_hours_forward_rule, "non_office_hours"
