"""A request budget per fixed window, as a rate-limited registry enforces it,
and the time-weighted count of requests in flight: the bookkeeping of the
counting proxy (harness/proxy.py), kept apart from its forwarding.

RequestBudget plays a registry like Docker Hub that answers at most N
requests per window of W seconds and refuses the rest with 429 until the
window ends.  It counts every request that reaches it (any method, any
path, the `/v2/` check included): Docker Hub counts manifest GETs only, but
counting everything is the harsher test and needs no parsing of paths.
Windows are fixed and start at the first request after a reset, so window 0
of a measured run is its first W seconds.
"""

from __future__ import annotations

import math
import threading
from typing import Any


def inflight_stats(events: list[tuple[float, int]]) -> dict[str, Any]:
    """Requests in flight from (time, +1 at a request's head, -1 when its
    response was forwarded) events: the mean weighted by time over the span
    from the first event to the last, and the maximum.  Events of several
    proxies may be mixed: the result is then for all of them together.
    An end without its start (a request begun before the counters were
    reset) counts from zero."""
    if not events:
        return {"inflight_mean": 0.0, "inflight_max": 0, "inflight_span_s": 0.0}
    # Ends before starts at the same instant: a request answered and the
    # next one sent on the same tick are not both in flight.
    ordered = sorted(events)
    level = peak = 0
    area = 0.0
    prev = ordered[0][0]
    for t, delta in ordered:
        area += level * (t - prev)
        prev = t
        level = max(0, level + delta)
        peak = max(peak, level)
    span = ordered[-1][0] - ordered[0][0]
    return {"inflight_mean": area / span if span > 0 else float(peak), "inflight_max": peak,
            "inflight_span_s": span}


class RequestBudget:
    """At most `limit` requests per fixed window of `window_s` seconds."""

    def __init__(self, limit: int, window_s: float):
        if limit < 1 or window_s <= 0:
            raise ValueError("a budget needs a limit >= 1 and a window > 0")
        self.limit = limit
        self.window_s = window_s
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.t0: float | None = None
            self.window = -1
            self.used = 0
            self.per_window: list[list[int]] = []  # [requests, refused] per window
            # "METHOD /path" -> [(window, seconds since the first request,
            # Retry-After given)] for every refusal of that request.
            self.refusals: dict[str, list[tuple[int, float, int]]] = {}

    @property
    def policy(self) -> str:
        """The `;w=` parameter of the ratelimit headers (whole seconds)."""
        return f"w={max(1, round(self.window_s))}"

    def admit(self, key: str, now: float) -> tuple[bool, int, int]:
        """Whether the request `key` (method and path) arriving at `now`
        (monotonic) is answered: (admitted, requests left in this window,
        Retry-After seconds for a refusal, else 0)."""
        with self.lock:
            if self.t0 is None:
                self.t0 = now
            w = int((now - self.t0) // self.window_s)
            if w != self.window:
                self.window, self.used = w, 0
            while len(self.per_window) <= w:
                self.per_window.append([0, 0])
            self.per_window[w][0] += 1
            if self.used < self.limit:
                self.used += 1
                return True, self.limit - self.used, 0
            self.per_window[w][1] += 1
            # Until the window ends, rounded up: a client that waits this
            # long finds a new budget.
            retry = max(1, math.ceil(self.t0 + (w + 1) * self.window_s - now))
            self.refusals.setdefault(key, []).append((w, now - self.t0, retry))
            return False, 0, retry

    def take(self) -> dict[str, Any]:
        """What was admitted and refused since the last reset(), which this
        does too.  A "repeat" is a request refused again within the same
        window (after its Retry-After it would have met a new window) or
        sooner than the Retry-After it was given."""
        with self.lock:
            per_window = [list(p) for p in self.per_window]
            refusals = {k: list(v) for k, v in self.refusals.items()}
        self.reset()
        worst_key, worst = "", 0
        early = 0
        for key, rs in refusals.items():
            counts: dict[int, int] = {}
            for w, _, _ in rs:
                counts[w] = counts.get(w, 0) + 1
            top = max(counts.values())
            if top > worst:
                worst_key, worst = key, top
            early += sum(1 for a, b in zip(rs, rs[1:]) if b[1] - a[1] < a[2])
        requests = sum(p[0] for p in per_window)
        refused = sum(p[1] for p in per_window)
        later_requests = sum(p[0] for p in per_window[1:])
        later_refused = sum(p[1] for p in per_window[1:])
        return {
            "limit": self.limit, "window_s": self.window_s,
            "requests": requests, "refused": refused,
            "windows": len(per_window),
            "requests_per_window": [p[0] for p in per_window],
            "refused_per_window": [p[1] for p in per_window],
            "requests_after_first_window": later_requests,
            "refused_after_first_window": later_refused,
            "refused_share_after_first_window": later_refused / later_requests if later_requests else 0.0,
            "keys_refused": len(refusals),
            "max_refusals_of_a_key_in_a_window": worst,
            "key_refused_most_in_a_window": worst_key,
            "refused_again_before_retry_after": early,
            "refusals": {k: v for k, v in sorted(refusals.items())},
        }
