"""The receptionist model: PortSIP's `/api/ivrs` resource, action URLs and server settings.

Field names, enums and defaults follow PortSIP's API (`shared/reference/portsip-vr-openapi.json`).
Validation is strict and every message names what is allowed. A PIN given in clear is checked
against the PIN policy and replaced by its salted hash at once: a validated model never holds a
PIN in clear. Models are frozen: a call keeps the snapshot it started with.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from datetime import date, time
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import langcodes
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.rules.masks import mask_problems
from engine.rules.pin import hash_pin, is_pin_hash, pin_policy_problem

EXTENSION_RE = re.compile(r"^[0-9]{3,64}$")
DESTINATION_RE = re.compile(r"^\+?[0-9*#]{1,64}$")
USER_INPUT_RE = re.compile(r"^[0-9*]{0,32}#?$")
CREDENTIAL_RE = re.compile(r"^[a-z0-9]{6,64}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
HOST_PORT_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")
HH_MM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
MONTH_DAY_RE = re.compile(r"^--(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# A PIN arrives in clear from a config file or the API, and as a hash only from our own store.
TRUSTED_STORE = "trusted_store"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- field checks --------------------------------------------------------------------------


def _extension(value: str) -> str:
    if not EXTENSION_RE.fullmatch(value):
        raise ValueError("must be 3 to 64 digits (0-9), like 800")
    return value


def _destination(value: str) -> str:
    if not DESTINATION_RE.fullmatch(value):
        raise ValueError("must be a number of up to 64 digits, * or #, optionally starting with +")
    return value


def _mask(value: str) -> str:
    problems = mask_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


def _language(value: str) -> str:
    if not langcodes.tag_is_valid(value):
        raise ValueError(f"{value!r} is not a valid BCP 47 language tag (like en-US, de, pt-BR)")
    return langcodes.standardize_tag(value)


def _credential(value: str) -> str:
    if not CREDENTIAL_RE.fullmatch(value):
        raise ValueError("must be 6 to 64 characters of lowercase letters a-z and digits 0-9")
    return value


def _hh_mm(value: str) -> str:
    if not HH_MM_RE.fullmatch(value):
        raise ValueError("must be a time HH:MM between 00:00 and 24:00")
    return value


Extension = Annotated[str, AfterValidator(_extension)]
Destination = Annotated[str, AfterValidator(_destination)]
MaskText = Annotated[str, Field(max_length=255), AfterValidator(_mask)]
LanguageTag = Annotated[str, AfterValidator(_language)]
Credential = Annotated[str, AfterValidator(_credential)]
ClockTime = Annotated[str, AfterValidator(_hh_mm)]


def parse_clock(value: str) -> time:
    """`HH:MM` as a time; `24:00` is the end of the day (time.max)."""
    if value == "24:00":
        return time.max
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


# --- forward rules -------------------------------------------------------------------------


class ForwardAction(StrEnum):
    FORWARD_TO_NUMBER = "FORWARD_TO_NUMBER"
    FORWARD_TO_VOICEMAIL = "FORWARD_TO_VOICEMAIL"
    REPEAT = "REPEAT"
    HANGUP = "HANGUP"
    DISA = "DISA"


_NEEDS_NUMBER = (ForwardAction.FORWARD_TO_NUMBER, ForwardAction.FORWARD_TO_VOICEMAIL)


class _RuleBase(Strict):
    action: ForwardAction
    number: Destination | None = None

    @field_validator("number", mode="before")
    @classmethod
    def _empty_number_is_none(cls, value: Any) -> Any:
        """Forms send `number: ""` with actions that need none (HANGUP, REPEAT)."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _number_when_needed(self) -> Self:
        if self.action in _NEEDS_NUMBER and not self.number:
            raise ValueError(f"action {self.action.value} needs a number")
        return self


class ForwardRule(_RuleBase):
    """`failure_forward_rule`, `night_mode_forward_rule` (no DISA)."""

    action: ForwardAction = ForwardAction.HANGUP

    @field_validator("action")
    @classmethod
    def _no_disa(cls, value: ForwardAction) -> ForwardAction:
        if value is ForwardAction.DISA:
            raise ValueError(
                "DISA is only allowed in menu rules; use FORWARD_TO_NUMBER, "
                "FORWARD_TO_VOICEMAIL, REPEAT or HANGUP"
            )
        return value


class TimeoutForwardRule(ForwardRule):
    """What happens when the caller enters nothing: `repeat_times` replays, then `action`."""

    timeout: int = Field(default=30, ge=1, le=3600)
    repeat_times: int = Field(default=3, ge=0, le=20)


class MenuForwardRule(_RuleBase):
    """A forward rule of a menu entry; may be DISA."""


# --- office hours and holidays -------------------------------------------------------------


class TimeRange(Strict):
    from_: ClockTime = Field(alias="from")
    to: ClockTime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if parse_clock(self.from_) >= parse_clock(self.to):
            raise ValueError(
                f"'from' {self.from_} must be before 'to' {self.to}; split a range that "
                "crosses midnight into two days"
            )
        return self


class DaySchedule(Strict):
    enabled: bool = False
    ranges: list[TimeRange] = Field(default_factory=list)


class WeeklySchedule(Strict):
    """Office hours per weekday (PortSIP shape). A day not given is closed."""

    monday: DaySchedule = DaySchedule()
    tuesday: DaySchedule = DaySchedule()
    wednesday: DaySchedule = DaySchedule()
    thursday: DaySchedule = DaySchedule()
    friday: DaySchedule = DaySchedule()
    saturday: DaySchedule = DaySchedule()
    sunday: DaySchedule = DaySchedule()

    def day(self, weekday: int) -> DaySchedule:
        """The schedule of `weekday` (0 = Monday, as `date.weekday()`)."""
        schedule: DaySchedule = getattr(self, WEEKDAYS[weekday])
        return schedule


class OfficeHoursMode(StrEnum):
    GLOBAL = "GLOBAL"
    CUSTOM = "CUSTOM"


class OfficeHours(WeeklySchedule):
    mode: OfficeHoursMode = OfficeHoursMode.GLOBAL


class Holiday(Strict):
    """A holiday, defined once at server level and referenced by name from menu rules.

    `start`/`end` are dates (`2026-12-24`) or, for every year, `--MM-DD`. `end` defaults to
    `start` and is inclusive.
    """

    name: str = Field(min_length=1, max_length=64)
    start: str
    end: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _day(cls, value: str | None) -> str | None:
        if value is None or MONTH_DAY_RE.fullmatch(value):
            return value
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a date YYYY-MM-DD, or --MM-DD for every year") from None
        return value

    @model_validator(mode="after")
    def _same_kind(self) -> Self:
        if self.end is not None and self.start.startswith("--") != self.end.startswith("--"):
            raise ValueError("start and end must both be dates or both be --MM-DD")
        if self.end is not None and not self.start.startswith("--") and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


# --- menu rules ----------------------------------------------------------------------------


class MenuRule(Strict):
    """One entry of `custom_forward_rules`."""

    user_input: str
    office_hours: OfficeHours = OfficeHours()
    office_hours_forward_rule: MenuForwardRule
    non_office_hours_forward_rule: MenuForwardRule | None = None
    holidays: list[str] = Field(default_factory=list)
    holiday_forward_rule: MenuForwardRule | None = None

    @field_validator("user_input")
    @classmethod
    def _input(cls, value: str) -> str:
        if not value or not USER_INPUT_RE.fullmatch(value):
            raise ValueError(
                "must be up to 32 keys 0-9 or *, optionally ending with # (like 1, 21, 5#)"
            )
        return value

    @property
    def needs_hash(self) -> bool:
        return self.user_input.endswith("#")

    @property
    def digits(self) -> str:
        return self.user_input.removesuffix("#")

    def forward_rules(self) -> list[MenuForwardRule]:
        rules = [self.office_hours_forward_rule]
        rules += [r for r in (self.non_office_hours_forward_rule, self.holiday_forward_rule) if r]
        return rules


# --- action URLs ---------------------------------------------------------------------------


class ActionUrlType(StrEnum):
    DTMF = "DTMF"
    CALLER = "CALLER"


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"


class AuthMethod(StrEnum):
    DISABLE = "DISABLE"
    BASIC = "BASIC"
    DIGEST = "DIGEST"
    BEARER = "BEARER"


DEFAULT_URL_TIMEOUT = 2


def parse_headers(text: str) -> list[tuple[str, str]]:
    """`k1:v1&k2:v2` as (name, value) pairs. Raises ValueError on a malformed pair."""
    pairs = []
    for raw in text.split("&"):
        if not raw.strip():
            continue
        name, sep, value = raw.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not HEADER_NAME_RE.fullmatch(name):
            raise ValueError(f"{raw!r} is not name:value (headers are written k1:v1&k2:v2)")
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"the value of header {name!r} contains a line break or NUL")
        pairs.append((name, value))
    return pairs


class ActionUrl(Strict):
    """A webhook of a receptionist (`/api/ivrs/{id}/action_urls`)."""

    id: str | None = None
    name: str = Field(min_length=1, max_length=64)
    enabled: bool = False
    type: ActionUrlType
    method: HttpMethod = HttpMethod.GET
    headers: str = ""
    caller_mask: MaskText = ""
    dtmf_mask: MaskText = ""
    connection_timeout: int = Field(default=DEFAULT_URL_TIMEOUT, ge=0, le=60)
    request_timeout: int = Field(default=DEFAULT_URL_TIMEOUT, ge=0, le=60)
    url: str = Field(min_length=1, max_length=2048)
    auth: AuthMethod = AuthMethod.DISABLE
    username: Credential | None = None
    password: SecretStr | None = Field(default=None, repr=False)
    token: SecretStr | None = Field(default=None, repr=False)
    # Beyond PortSIP, off by default: an HMAC-SHA256 signature header, an idempotency key.
    signing_secret: SecretStr | None = Field(default=None, repr=False)
    idempotency: bool = False

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: str) -> str:
        parse_headers(value)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+[^\s]*$", value, re.IGNORECASE):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _credential(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _auth_fields(self) -> Self:
        if self.auth in (AuthMethod.BASIC, AuthMethod.DIGEST):
            missing = [f for f in ("username", "password") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"auth {self.auth.value} needs {' and '.join(missing)}")
        if self.auth is AuthMethod.BEARER and not (self.token and self.token.get_secret_value()):
            raise ValueError("auth BEARER needs a token")
        if self.enabled and self.type is ActionUrlType.DTMF and not self.dtmf_mask.strip():
            raise ValueError("an enabled DTMF action URL needs a dtmf_mask (ALL matches any input)")
        if self.enabled and self.type is ActionUrlType.CALLER and not self.caller_mask.strip():
            raise ValueError(
                "an enabled CALLER action URL needs a caller_mask (ALL matches every caller)"
            )
        return self

    @property
    def effective_connection_timeout(self) -> float:
        return float(self.connection_timeout or DEFAULT_URL_TIMEOUT)

    @property
    def effective_request_timeout(self) -> float:
        return float(self.request_timeout or DEFAULT_URL_TIMEOUT)


# --- the receptionist ----------------------------------------------------------------------


class OutboundCallerId(BaseModel):
    """Stored and returned as given; not used by the runtime."""

    model_config = ConfigDict(extra="allow", frozen=True)

    provider_id: str | None = None
    caller_id: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=1024)


class Receptionist(Strict):
    """A virtual receptionist (`/api/ivrs`), with its action URLs: what a call is built from."""

    id: str | None = None
    name: str = Field(min_length=1, max_length=64)
    extension_number: Extension
    enabled: bool = True
    language: LanguageTag = "en-US"
    dtmf_interval: int = Field(default=2, ge=1, le=60)
    prompt_file_id: str | None = None
    transfer_prompt_file_id: str | None = None
    enable_pin: bool = True
    pin: str | None = Field(default=None, repr=False)
    enable_night_mode: bool = False
    exclude_list: MaskText = ""
    timeout_forward_rule: TimeoutForwardRule = TimeoutForwardRule()
    failure_forward_rule: ForwardRule = ForwardRule(action=ForwardAction.REPEAT)
    night_mode_forward_rule: ForwardRule = ForwardRule()
    custom_forward_rules: list[MenuRule] = Field(default_factory=list)
    outbound_caller_ids: list[OutboundCallerId] = Field(default_factory=list)
    action_urls: list[ActionUrl] = Field(default_factory=list)

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError("write the PIN as a quoted string so leading zeros survive")
        if not isinstance(value, str):
            raise ValueError("must be a string of 6 to 10 digits")
        trusted = bool(info.context and info.context.get(TRUSTED_STORE))
        if trusted and is_pin_hash(value):
            return value
        problem = pin_policy_problem(value)
        if problem:
            raise ValueError(problem)
        return hash_pin(value)

    @field_validator("custom_forward_rules")
    @classmethod
    def _unique_inputs(cls, rules: list[MenuRule]) -> list[MenuRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.user_input in seen:
                raise ValueError(f"two menu rules have user_input {rule.user_input!r}")
            seen.add(rule.user_input)
        return rules

    @model_validator(mode="after")
    def _pin_for_disa(self) -> Self:
        uses_disa = any(
            fr.action is ForwardAction.DISA
            for rule in self.custom_forward_rules
            for fr in rule.forward_rules()
        )
        if uses_disa and self.enable_pin and self.pin is None:
            raise ValueError(
                "a menu rule uses DISA and enable_pin is true, so a pin is required "
                "(6-10 digits, or set enable_pin: false)"
            )
        return self

    @property
    def pin_hash(self) -> str | None:
        """The stored form of the PIN (always a salted hash once validated)."""
        return self.pin

    def enabled_action_urls(self, kind: ActionUrlType) -> list[ActionUrl]:
        return [url for url in self.action_urls if url.enabled and url.type is kind]


# --- server settings -----------------------------------------------------------------------


class DisaSettings(Strict):
    """Who may be reached through DISA, and when a caller is locked out.

    `allowed_destinations` is a mask (see `engine.rules.masks`): by default 3- to 5-digit
    numbers, where PBX extensions live; external numbers need an explicit entry.
    """

    allowed_destinations: MaskText = "***;****;*****"
    pin_attempts: int = Field(default=3, ge=1, le=10)
    max_failed_calls: int = Field(default=5, ge=1, le=1000)
    failure_window: int = Field(default=900, ge=1, description="seconds")
    lockout: int = Field(default=3600, ge=1, description="seconds")


class SipRateLimit(Strict):
    """New INVITEs accepted per source address: `invites_per_second` on average, bursts of
    up to `burst`. Beyond it the INVITE gets 503. 0 turns the limit off. Also at most
    `max_unconfirmed` answered calls per source still waiting for their ACK (a PBX ACKs
    within milliseconds; a flood never does): more INVITEs from that source get 503.

    Extension probing: a source that calls more than `unknown_per_minute` extensions that do
    not exist (bursts of as many) gets `404` for every INVITE for `unknown_block` seconds,
    existing extensions included, so that it cannot tell them apart. 0 turns it off; sources
    in `sip_allow` (when that list is set) and sources that ACKed a call in the last day (a
    forged address cannot) are never blocked."""

    invites_per_second: float = Field(default=100, ge=0)
    burst: int = Field(default=200, ge=1)
    max_unconfirmed: int = Field(default=20, ge=1)
    unknown_per_minute: int = Field(default=10, ge=0)
    unknown_block: int = Field(default=600, ge=1, le=86400)


class ServerSettings(Strict):
    """The `server:` section of the configuration file (SPEC §7)."""

    name: str = Field(default="vr-1", min_length=1, max_length=64)
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(default=8922, ge=0, le=65535)
    # first RTP port tried for a call's media (two per call); pjsua moves up past taken ones
    rtp_port: int = Field(default=4000, ge=1024, le=65000)
    # None: UDP, and TCP too when the SIP stack survives connection floods (see
    # engine.server.sip_transports)
    sip_transports: tuple[Literal["udp", "tcp"], ...] | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8923, ge=0, le=65535)
    transfer_domain: str | None = None
    timezone: str = "UTC"
    night_mode: bool = False
    office_hours: WeeklySchedule | None = None
    holidays: list[Holiday] = Field(default_factory=list)
    disa: DisaSettings = DisaSettings()
    voicemail_uri_template: str = "sip:*{number}@{domain}"
    transfer_timeout: int = Field(default=20, ge=1, le=300)
    transfer_assume_done_after: int = Field(default=5, ge=1, le=60)
    builtin_transfer_prompt: bool = False
    sip_allow: list[str] = Field(default_factory=list)
    # sent as User-Agent (requests) and in answers; "" (the default) sends none, so that a scan
    # learns no product name or version
    sip_user_agent: str = Field(default="", max_length=128, pattern=r"^[\x20-\x7e]*$")
    sip_rate_limit: SipRateLimit = SipRateLimit()
    max_calls: int | None = Field(default=None, ge=1)
    shutdown_grace: int = Field(default=30, ge=0, le=3600)
    api_token: SecretStr | None = Field(default=None, repr=False)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a known IANA time zone (like Europe/Berlin, UTC)"
            ) from None
        return value

    @field_validator("sip_allow")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address or network (like 192.0.2.10 or 10.0.0.0/8)"
                ) from None
        return values

    @field_validator("voicemail_uri_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{number}" not in value:
            raise ValueError("must contain {number} (and usually {domain})")
        try:
            value.format(number="100", domain="pbx.example")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may only use the placeholders {number} and {domain}") from None
        return value

    @field_validator("transfer_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not HOST_PORT_RE.fullmatch(value):
            raise ValueError("must be HOST or HOST:PORT (IPv6 in brackets)")
        return value

    def holiday(self, name: str) -> Holiday | None:
        return next((h for h in self.holidays if h.name == name), None)
