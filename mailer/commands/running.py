"""How a command is registered and run: each module of mailer/commands adds its parsers
with `add_parser(subcommands)` and names what runs for each (`runs`, or `on_database` for a
command that reads or writes the database); `mailer/cli.py` only parses and calls it. The
pool and the broker a command opens are closed when it ends, however it ends."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import asyncpg

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.config import Settings
from mailer.core.tokens import derive_key
from mailer.errors import MailerError

T = TypeVar("T")
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace, Settings], int]
AsyncRun = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
PoolRun = Callable[[argparse.Namespace, Settings, asyncpg.Pool], Awaitable[int]]


def runs(parser: argparse.ArgumentParser, run: Run) -> None:
    """`run(args, settings)` is what this command does; it returns the exit status."""
    parser.set_defaults(run=run)


def runs_async(parser: argparse.ArgumentParser, run: AsyncRun) -> None:
    runs(parser, lambda args, settings: asyncio.run(run(args, settings)))


def on_database(parser: argparse.ArgumentParser, run: PoolRun) -> None:
    """A command given a small pool of its own: `run(args, settings, pool)`."""

    async def opened(args: argparse.Namespace, settings: Settings) -> int:
        return await with_database(settings, lambda pool: run(args, settings, pool))

    runs_async(parser, opened)


async def with_database(settings: Settings, call: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    pool = await database.open_pool(settings.database.url.get_secret_value(), size=2)
    try:
        return await call(pool)
    finally:
        await pool.close()


async def with_broker(
    settings: Settings, call: Callable[[Broker], Awaitable[T]], *, name: str
) -> T:
    broker = Broker.from_settings(settings.broker, name=f"mailer {name}")
    await broker.connect()
    try:
        return await call(broker)
    finally:
        await broker.close()


def read_input(path: Path) -> bytes:
    """A file's bytes, or standard input's for `-`; MailerError when it cannot be read."""
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise MailerError(f"cannot read {path}: {exc.strerror}") from None


def address_hash_key(settings: Settings) -> bytes:
    """The key addresses are hashed with, to find a person by what an operator typed."""
    return derive_key(settings.security.address_secret(), "address")
