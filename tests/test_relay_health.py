"""The relay's refusals by class over a recent window, as the console's overview shows them."""

from __future__ import annotations

from mailer.health import RECENT_SECONDS, RelayHealth


def test_refusals_are_counted_by_class_over_the_last_15_minutes() -> None:
    now = [1000.0]
    relay = RelayHealth(clock=lambda: now[0])
    assert relay.recent_failures() == dict.fromkeys(
        ("connection", "timeout", "tls", "auth", "sender", "other"), 0
    )
    relay.session_refused("535 5.7.8 authentication failed")
    now[0] += 60
    relay.session_refused("553 5.7.1 sender address rejected")
    relay.session_refused("Connection refused")
    relay.session_worked()
    found = relay.recent_failures()
    assert (found["auth"], found["sender"], found["connection"], found["tls"]) == (1, 1, 1, 0)
    now[0] += RECENT_SECONDS - 30  # the first refusal is now older than the window
    found = relay.recent_failures()
    assert (found["auth"], found["sender"], found["connection"]) == (0, 1, 1)
    now[0] += 60
    assert sum(relay.recent_failures().values()) == 0
