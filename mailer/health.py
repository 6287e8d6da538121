"""What the worker knows of its own health, for /readyz and operators: the relay's recent
sessions and the lease heartbeat. Updated by the worker, read by the HTTP service."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailer.core.relay_failures import CLASSES, FailureClass, failure_class
from mailer.metrics import Metrics

# Sessions in a row that the relay refused (no connection, TLS, AUTH, our sender) before
# readiness fails: one can be a blip, three with no success between is the relay or us.
RELAY_FAILURES_NOT_READY = 3
RECENT_SECONDS = 15 * 60.0  # refusals by class over this window, for the console
RECENT_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at else None


class RelayHealth:
    def __init__(
        self, metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._refused: deque[tuple[float, FailureClass]] = deque(maxlen=RECENT_KEPT)
        self.last_success: datetime | None = None
        self.last_failure: datetime | None = None
        self.last_reason: str | None = None
        self.failures_in_a_row = 0
        self._metrics = metrics
        if metrics is not None:
            metrics.relay_up.set(1)
            for name in CLASSES:  # every class shown from the start, at 0
                metrics.relay_failures.labels(name)

    def session_worked(self) -> None:
        """The relay answered a transaction (whatever it said of the recipient)."""
        self.last_success = datetime.now(UTC)
        self.failures_in_a_row = 0
        if self._metrics is not None:
            self._metrics.relay_up.set(1)

    def session_refused(self, reason: str) -> None:
        self.last_failure = datetime.now(UTC)
        self.last_reason = reason
        self.failures_in_a_row += 1
        kind = failure_class(reason)
        self._refused.append((self._clock(), kind))
        if self._metrics is not None:
            self._metrics.relay_failures.labels(kind).inc()
            self._metrics.relay_up.set(int(self.failures_in_a_row < RELAY_FAILURES_NOT_READY))

    def recent_failures(self, seconds: float = RECENT_SECONDS) -> dict[str, int]:
        """Sessions refused within the last `seconds`, by class (every class, 0 too)."""
        since = self._clock() - seconds
        while self._refused and self._refused[0][0] < since:
            self._refused.popleft()
        counts: dict[str, int] = dict.fromkeys(CLASSES, 0)
        for _, kind in self._refused:
            counts[kind] += 1
        return counts

    def report(self) -> dict[str, object]:
        """What the process reports of its relay to its `workers` row, for the console."""
        return {
            **self.check(),
            "last_reason": self.last_reason,
            "failures_in_a_row": self.failures_in_a_row,
            "recent": self.recent_failures(),
        }

    def check(self) -> dict[str, object]:
        ok = self.failures_in_a_row < RELAY_FAILURES_NOT_READY
        if ok:
            detail = "accepting sessions" if self.last_success else "no session tried yet"
        else:
            detail = f"{self.failures_in_a_row} sessions refused in a row: {self.last_reason}"
        return {
            **Check(ok, detail).as_json(),
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
        }


class Heartbeat:
    """The renewal of this worker's leases. Not ok when the last renewal failed, or none
    succeeded for longer than a lease (claims may have lapsed: others may retake them)."""

    def __init__(self, lease: float) -> None:
        self._lease = lease
        self._last_ok = time.monotonic()
        self._error: str | None = None

    def renewed(self) -> None:
        self._last_ok = time.monotonic()
        self._error = None

    def failed(self, error: str) -> None:
        self._error = error

    def check(self) -> Check:
        age = time.monotonic() - self._last_ok
        if self._error is not None:
            return Check(False, f"lease renewal failed: {self._error}")
        if age > self._lease:
            return Check(False, f"no lease renewal for {age:.0f}s (lease {self._lease:.0f}s)")
        return Check(True, f"leases renewed {age:.0f}s ago")
