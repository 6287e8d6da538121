"""Operator accounts, their console sessions and the audit log, in PostgreSQL.

A session cookie is a random token; only its SHA-256 is stored. A login takes a slot before
its password is checked (`console_login_attempts`); the slots a window holds pace further
attempts, per account and per source, across processes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

import asyncpg

from mailer.adapters.database import execute, fetch, fetchrow, fetchval, from_row, transaction

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = get_args(Role)
LOGIN_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    name: str
    role: Role
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    operator: Operator
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    operator: str
    action: str
    target: str | None
    result: str
    detail: str | None
    source: str | None


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _operator(row: asyncpg.Record) -> Operator:
    return Operator(row["id"], row["name"], row["role"], row["password_hash"])


class Operators:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Accounts -------------------------------------------------------------------------

    async def add(self, name: str, role: Role, password_hash: str) -> bool:
        """False when the name is taken."""
        added = await fetchval(
            self._pool,
            "add operator",
            "INSERT INTO operators (name, role, password_hash) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING RETURNING true",
            name,
            role,
            password_hash,
        )
        return bool(added)

    async def set_password(self, name: str, password_hash: str) -> bool:
        """A new password ends every session of the account. False: no such operator."""
        async with transaction(self._pool, "set password") as conn:
            found = await conn.fetchval(
                "UPDATE operators SET password_hash = $2, updated_at = now() WHERE name = $1"
                " RETURNING id",
                name,
                password_hash,
            )
            if found is None:
                return False
            await conn.execute("DELETE FROM console_sessions WHERE operator_id = $1", found)
        return True

    async def remove(self, name: str) -> bool:
        removed = await fetchval(
            self._pool,
            "remove operator",
            "DELETE FROM operators WHERE name = $1 RETURNING true",
            name,
        )
        return bool(removed)

    async def find(self, name: str) -> Operator | None:
        row = await fetchrow(
            self._pool, "find operator", "SELECT * FROM operators WHERE name = $1", name
        )
        return _operator(row) if row is not None else None

    # Sessions -------------------------------------------------------------------------

    async def open_session(
        self, operator: Operator, *, lifetime: timedelta, source: str | None
    ) -> str:
        """A new session; returns the cookie's token (never stored as such)."""
        token = secrets.token_urlsafe(32)
        await execute(
            self._pool,
            "open session",
            "INSERT INTO console_sessions (token_hash, operator_id, csrf_token, source,"
            " expires_at) VALUES ($1, $2, $3, $4, now() + $5)",
            _token_hash(token),
            operator.id,
            secrets.token_urlsafe(32),
            source,
            lifetime,
        )
        await execute(
            self._pool, "open session", "DELETE FROM console_sessions WHERE expires_at < now()"
        )
        return token

    async def session(self, token: str) -> Session | None:
        row = await fetchrow(
            self._pool,
            "session",
            "SELECT o.*, s.csrf_token, s.expires_at FROM console_sessions s"
            " JOIN operators o ON o.id = s.operator_id"
            " WHERE s.token_hash = $1 AND s.expires_at > now()",
            _token_hash(token),
        )
        if row is None:
            return None
        return Session(_operator(row), row["csrf_token"], row["expires_at"])

    async def close_session(self, token: str) -> None:
        await execute(
            self._pool,
            "close session",
            "DELETE FROM console_sessions WHERE token_hash = $1",
            _token_hash(token),
        )

    # Audit ----------------------------------------------------------------------------

    async def audit(
        self,
        operator: str,
        action: str,
        *,
        target: str | None = None,
        result: str,
        detail: str | None = None,
        source: str | None = None,
    ) -> None:
        await execute(
            self._pool,
            "audit",
            "INSERT INTO console_audit (operator, action, target, result, detail, source)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            operator[:64],
            action,
            target,
            result,
            detail,
            source,
        )

    async def recent_audit(self, limit: int = 200) -> list[AuditEntry]:
        rows = await fetch(
            self._pool,
            "audit log",
            "SELECT at, operator, action, target, result, detail, source FROM console_audit"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [from_row(AuditEntry, row) for row in rows]

    # Login slots -----------------------------------------------------------------------

    async def take_login_slot(self, name: str, source: str, limit: int) -> int | None:
        """A slot for one login attempt, taken before its password is checked; None when
        the account or the source holds `limit` already in the window (failed ones, and
        ones still being checked). Taken one at a time across processes (the table lock)."""
        async with transaction(self._pool, "login slot") as conn:
            await conn.execute("LOCK TABLE console_login_attempts IN EXCLUSIVE MODE")
            await conn.execute(
                "DELETE FROM console_login_attempts WHERE at <= now() - $1::interval",
                LOGIN_WINDOW,
            )
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE account = $1) AS account,"
                " count(*) FILTER (WHERE source = $2) AS source FROM console_login_attempts"
                " WHERE failed IS NOT false",
                name,
                source,
            )
            assert row is not None
            if row["account"] >= limit or row["source"] >= limit:
                return None
            slot: int = await conn.fetchval(
                "INSERT INTO console_login_attempts (account, source) VALUES ($1, $2) RETURNING id",
                name,
                source,
            )
        return slot

    async def settle_login_slot(self, slot: int, *, failed: bool) -> None:
        """The password was checked: a failure keeps the slot for the window, a success
        gives it back."""
        await execute(
            self._pool,
            "login slot",
            "UPDATE console_login_attempts SET failed = $2 WHERE id = $1",
            slot,
            failed,
        )

    async def give_back_login_slot(self, slot: int) -> None:
        """The password was not checked after all (the process was too busy to)."""
        await execute(
            self._pool, "login slot", "DELETE FROM console_login_attempts WHERE id = $1", slot
        )
