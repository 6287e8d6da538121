"""A PostgreSQL primary and its streaming standby of the test's own, for failover tests.

Both run from a scratch folder on free loopback ports (never the machine's 5432), as the
`postgres` user when the tests run as root. The standby is synchronous: a commit the primary
acknowledged is on the standby too, as production runs it (Patroni's synchronous mode), so
what a failover may repeat is bounded by mailer, not by replication lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

# Speed over durability: the data lives for one test module; a stopped primary is never
# restarted, so its unsynced pages do not matter.
_COMMON = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    " -c shared_buffers=16MB -c max_connections=40 -c max_wal_senders=4"
)


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed, if any."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class PostgresPair:
    """`start()` makes the primary and a standby from `pg_basebackup -R`; `fail_over()` is
    what an operator (or Patroni) does when the primary dies."""

    bin: Path
    base: Path
    primary_port: int
    standby_port: int
    log: list[str] = field(default_factory=list)

    @property
    def primary(self) -> Path:
        return self.base / "primary"

    @property
    def standby(self) -> Path:
        return self.base / "standby"

    def url(self, database: str, *, standby_first: bool = False) -> str:
        """The libpq multi-host URL a client names both servers with."""
        hosts = [f"127.0.0.1:{self.primary_port}", f"127.0.0.1:{self.standby_port}"]
        if standby_first:
            hosts.reverse()
        return f"postgresql://postgres@{','.join(hosts)}/{database}?target_session_attrs=read-write"

    def single_url(self, port: int, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        started = time.monotonic()
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        self.log.append(
            f"{args[0]} {args[1] if len(args) > 1 else ''}: {time.monotonic() - started:.2f}s"
        )

    def _options(self, port: int, extra: str = "") -> str:
        return f"-p {port} -k {self.base} {_COMMON} {extra}".strip()

    def start(self) -> None:
        self._run("initdb", "-D", str(self.primary), "-U", "postgres", "--auth=trust", "-N")
        self._run(
            "pg_ctl", "-D", str(self.primary), "-l", str(self.base / "primary.log"), "-w",
            "-o", self._options(
                self.primary_port, "-c wal_level=replica -c synchronous_standby_names='*'"
            ),
            "start",
        )  # fmt: skip
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        # No synchronous_standby_names here: once promoted it has no standby to wait for.
        self._run(
            "pg_ctl", "-D", str(self.standby), "-l", str(self.base / "standby.log"), "-w",
            "-o", self._options(self.standby_port), "start",
        )  # fmt: skip

    async def wait_streaming(self, timeout: float = 30) -> None:
        """Until the standby confirms commits: before that the primary's commits wait."""
        conn = await asyncpg.connect(self.single_url(self.primary_port, "postgres"))
        try:
            deadline = time.monotonic() + timeout
            while not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE state = 'streaming' AND sync_state = 'sync'"
            ):
                if time.monotonic() > deadline:
                    raise AssertionError("the standby did not start streaming")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def fence_primary(self) -> None:
        """The primary turns read-only for every session, as a failover tool fences an old
        primary before it promotes another: its clients get SQLSTATE 25006."""
        conn = await asyncpg.connect(self.single_url(self.primary_port, "postgres"))
        try:
            await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    def stop_primary(self) -> None:
        """The primary dies: no shutdown checkpoint, every session cut."""
        self._run("pg_ctl", "-D", str(self.primary), "-m", "immediate", "-w", "stop")

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.standby), "-w", "promote")

    def close(self) -> None:
        for folder in (self.primary, self.standby):
            if (folder / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError):  # already down
                    self._run("pg_ctl", "-D", str(folder), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def make_pair() -> PostgresPair:
    """A started pair, or a skip (a failure under CI=true) when PostgreSQL is not installed."""
    binaries = postgres_bin()
    if binaries is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries are not installed (CI=true: not skipping)")
        pytest.skip("PostgreSQL server binaries are not installed")
    base = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    primary_port, standby_port = free_ports(2)
    pair = PostgresPair(binaries, base, primary_port, standby_port)
    try:
        pair.start()
    except BaseException:
        pair.close()
        raise
    return pair
