"""`mailer webhooks …`, run as an operator runs it: a real process against the test's
database; the secret shown once and stored sealed, every change audited."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.support.processes import amailer, environment


async def test_register_list_rotate_disable_replay_and_remove(
    config: dict[str, Any], db: asyncpg.Connection
) -> None:
    env = environment(config)
    refused = await amailer("webhooks", "add", "http://hooks.acme.example/in", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "mailer: URL: the URL must start with https://"

    added = await amailer(
        "webhooks", "add", "https://hooks.acme.example/in", "--account", "acme", env=env
    )
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    endpoint = lines[0].split()[1]
    secret = lines[1].split()[1]
    assert lines[0] == f"endpoint {endpoint} for account acme"
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 44
    stored = await db.fetchval("SELECT secret FROM webhook_endpoints WHERE id = $1::uuid", endpoint)
    assert stored.startswith("v1.") and secret not in stored and secret[6:] not in stored

    rotated = await amailer("webhooks", "rotate-secret", endpoint, env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.split()[1] != secret
    assert "signs too for 24 hours" in rotated.stdout

    disabled = await amailer("webhooks", "disable", endpoint, "--reason", "maintenance", env=env)
    assert disabled.returncode == 0, disabled.stderr
    listed = await amailer("webhooks", "list", "--account", "acme", env=env)
    assert listed.stdout.splitlines()[0] == (
        f"{endpoint}  acme  disabled (operator)  https://hooks.acme.example/in"
    )
    assert "disabled " in listed.stdout and "maintenance" in listed.stdout
    assert "previous secret signs too until" in listed.stdout
    assert secret not in listed.stdout

    replayed = await amailer("webhooks", "replay", endpoint, "--since", "2026-01-01", env=env)
    assert replayed.returncode == 0, replayed.stderr
    removed = await amailer("webhooks", "remove", endpoint, env=env)
    assert removed.returncode == 0
    again = await amailer("webhooks", "remove", endpoint, env=env)
    assert again.returncode == 1 and "no webhook endpoint" in again.stderr
    audit = await db.fetch("SELECT action, target FROM console_audit ORDER BY id")
    assert [r["action"] for r in audit] == [
        "webhook add",
        "webhook rotate-secret",
        "webhook disable",
        "webhook replay",
        "webhook remove",
    ]
    assert {r["target"] for r in audit} == {endpoint}
