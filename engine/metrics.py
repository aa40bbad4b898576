"""Prometheus metrics (SPEC §6): calls, SIP responses, DTMF, action URLs, transfers, DISA,
prompt conversions. One registry per runtime, rendered at `GET /metrics`. Labels never carry
digits, PINs, numbers or URLs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("vr_calls_active", "Calls in progress", registry=r)
        self.calls = Counter("vr_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.invites = Counter(
            "vr_sip_invites",
            "New INVITEs, by our answer (200 or the rejection code)",
            ["code"],
            registry=r,
        )
        self.dtmf = Counter("vr_dtmf_digits", "Key presses, by DTMF method", ["method"], registry=r)
        self.action_url_requests = Counter(
            "vr_action_url_requests",
            "Action URL requests, by type and result (call/hangup/repeat or a failure kind)",
            ["type", "result"],
            registry=r,
        )
        self.action_url_latency = Histogram(
            "vr_action_url_latency_seconds",
            "Action URL request latency",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transfers = Counter(
            "vr_transfers",
            "Transfer attempts, by result (succeeded/assumed/failed)",
            ["result"],
            registry=r,
        )
        self.disa = Counter(
            "vr_disa_events",
            "DISA events (pin_rejected, pin_accepted, lockout)",
            ["event"],
            registry=r,
        )
        self.prompt_conversions = Counter(
            "vr_prompt_conversions",
            "Prompt uploads converted (ok) or refused",
            ["result"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
