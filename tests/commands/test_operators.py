"""`mailer operator add|passwd|remove`, run as an operator runs it: a real process, the
password on standard input (never on the command line), the accounts in the database."""

from __future__ import annotations

from typing import Any

import asyncpg

from mailer.core.passwords import verify_password
from tests.support.processes import amailer, environment


async def test_add_change_and_remove_an_operator(
    config: dict[str, Any], db: asyncpg.Connection
) -> None:
    env = environment(config)
    added = await amailer(
        "operator", "add", "alice", "--role", "viewer", env=env, stdin=b"a long enough password\n"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "operator alice added (viewer)"
    row = await db.fetchrow("SELECT role, password_hash FROM operators WHERE name = 'alice'")
    assert row["role"] == "viewer"
    assert verify_password(row["password_hash"], "a long enough password")
    assert "a long enough password" not in row["password_hash"]

    again = await amailer(
        "operator", "add", "alice", "--role", "operator", env=env, stdin=b"another long password\n"
    )
    assert again.returncode == 1
    assert (
        again.stderr.strip() == "mailer: operator alice exists; use `mailer operator passwd alice`"
    )

    await db.execute(
        "INSERT INTO console_sessions (token_hash, operator_id, csrf_token, expires_at)"
        " SELECT 'x', id, 'y', now() + interval '1 hour' FROM operators WHERE name = 'alice'"
    )
    changed = await amailer("operator", "passwd", "alice", env=env, stdin=b"a brand new password\n")
    assert changed.returncode == 0, changed.stderr
    stored = await db.fetchval("SELECT password_hash FROM operators WHERE name = 'alice'")
    assert verify_password(stored, "a brand new password")
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 0  # logged out

    removed = await amailer("operator", "remove", "alice", env=env)
    assert removed.returncode == 0
    assert await db.fetchval("SELECT count(*) FROM operators") == 0
    audit = await db.fetch("SELECT operator, action, target FROM console_audit ORDER BY id")
    assert [tuple(r) for r in audit] == [
        ("cli", "operator add", "alice"),
        ("cli", "operator passwd", "alice"),
        ("cli", "operator remove", "alice"),
    ]


async def test_bad_names_passwords_and_unknown_accounts_get_one_line(
    config: dict[str, Any], db: asyncpg.Connection
) -> None:
    env = environment(config)
    cases = [
        (
            ("operator", "add", "Bob Smith", "--role", "operator"),
            b"a long enough password\n",
            "mailer: operator name 'Bob Smith': lowercase letters, digits, '.', '_' and '-',"
            " up to 63",
        ),
        (
            ("operator", "add", "bob", "--role", "operator"),
            b"short\n",
            "mailer: a password needs at least 12 characters",
        ),
        (
            ("operator", "add", "bob", "--role", "operator"),
            b"",
            "mailer: a password needs at least 12 characters",
        ),
        (
            ("operator", "passwd", "nobody"),
            b"a long enough password\n",
            "mailer: no operator nobody",
        ),
        (("operator", "remove", "nobody"), None, "mailer: no operator nobody"),
    ]
    for args, stdin, message in cases:
        result = await amailer(*args, env=env, stdin=stdin)
        assert result.returncode == 1, args
        assert result.stderr.strip() == message
        assert "Traceback" not in result.stderr
    assert await db.fetchval("SELECT count(*) FROM operators") == 0
    refused = await amailer("operator", "add", "bob", "--role", "admin", env=env)
    assert refused.returncode == 2  # argparse: not a role
