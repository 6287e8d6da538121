"""Fixtures: real PostgreSQL, real RabbitMQ, a real SMTP server; each test isolated.

Every test that touches a service gets its own database (cloned from a migrated template)
and its own RabbitMQ virtual host, so tests run in any order. When a service is missing the
tests that need it are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.config import Settings, build_settings
from mailer.core.signing import DkimKey, generate_key
from mailer.service import Service
from tests.support.smtp import SmtpServer
from tests.support.vhosts import VirtualHosts, rabbitmqctl

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get(
    "MAILER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_BASE = os.environ.get("MAILER_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET = "test-secret-key-that-is-long-enough-0123456789"


def _unavailable(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not available (CI=true: not skipping)")
    pytest.skip(f"{what} is not available")


def _dsn(name: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database migrated to the latest schema, cloned for every test."""
    name = f"mailer_tpl_{os.getpid()}"
    try:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name}"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        _unavailable("PostgreSQL")
    asyncio.run(database.migrate(_dsn(name)))
    yield name
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    name = f"mailer_t_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE {name} TEMPLATE {template_database}")
    yield _dsn(name)
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def empty_database_url() -> AsyncIterator[str]:
    """A database name that does not exist yet (for migration tests)."""
    name = f"mailer_e_{uuid.uuid4().hex[:12]}"
    try:
        await _admin("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError):
        _unavailable("PostgreSQL")
    yield _dsn(name)
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database, to look at what users would see in it."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def virtual_hosts() -> Iterator[VirtualHosts]:
    if shutil.which("rabbitmqctl") is None:
        _unavailable("RabbitMQ (rabbitmqctl)")
    try:
        rabbitmqctl("status")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        _unavailable("RabbitMQ")
    hosts = VirtualHosts()
    yield hosts
    hosts.close()


@pytest.fixture
def broker_url(virtual_hosts: VirtualHosts) -> Iterator[str]:
    """The URL of a fresh virtual host, deleted after the test."""
    vhost = virtual_hosts.take()
    yield AMQP_BASE.rstrip("/") + "/" + vhost
    virtual_hosts.give_back(vhost)


@dataclass(frozen=True)
class DkimKeys:
    rsa: DkimKey
    ed25519: DkimKey
    rsa_file: Path
    ed25519_file: Path

    def dns(self, name: bytes, timeout: int = 5) -> bytes:
        """A stand-in for DNS, for dkimpy's verifier."""
        for key in (self.rsa, self.ed25519):
            if name == f"{key.selector}._domainkey.{key.domain}.".encode():
                return key.dns_record().encode()
        return b""


@pytest.fixture(scope="session")
def dkim_keys(tmp_path_factory: pytest.TempPathFactory) -> DkimKeys:
    folder = tmp_path_factory.mktemp("dkim")
    rsa = generate_key("rsa", domain="lucid.example", selector="rsa2026")
    ed = generate_key("ed25519", domain="lucid.example", selector="ed2026")
    for name, key in (("rsa.pem", rsa), ("ed.pem", ed)):
        (folder / name).write_bytes(key.pem)
        (folder / name).chmod(0o600)  # mailer refuses a key file others can read
    return DkimKeys(rsa, ed, folder / "rsa.pem", folder / "ed.pem")


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    server = SmtpServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def config(
    database_url: str,
    broker_url: str,
    smtp_server: SmtpServer,
    dkim_keys: DkimKeys,
    tmp_path: Path,
) -> dict[str, Any]:
    """Settings as a TOML-shaped dict for one test, against its own services; edit, then build."""
    return {
        "broker": {"url": broker_url, "prefetch": 16},
        "database": {"url": database_url, "pool_size": 4},
        "smtp": {
            "url": f"smtp://127.0.0.1:{smtp_server.port}?tls=none",
            "pool_size": 2,
            "timeout": 5,
            "capture_dir": str(tmp_path / "outbox"),
        },
        "dkim": {
            "domain": "lucid.example",
            "selector": dkim_keys.rsa.selector,
            "key_file": str(dkim_keys.rsa_file),
            "ed25519_selector": dkim_keys.ed25519.selector,
            "ed25519_key_file": str(dkim_keys.ed25519_file),
        },
        "http": {"host": "127.0.0.1", "port": 0, "public_url": "https://mail.lucid.example"},
        "admin": {"host": "127.0.0.1", "port": 0},
        "security": {"secret_key": SECRET},
        "sender": {"from": "LucidOffice <no-reply@lucid.example>", "default_locale": "pl"},
        "retry": {"first_delay": 0.2, "max_delay": 0.4, "multiplier": 2, "give_up_after": 600},
        "worker": {"drain_timeout": 5, "lease": 3, "templates_dir": str(ROOT / "templates")},
        "lists": {
            "lucid-news": {
                "name": "Lucid News",
                "from": "Lucid News <news@lucid.example>",
                "default_locale": "pl",
            },
        },
    }


@pytest.fixture
async def portal(broker_url: str) -> AsyncIterator[Broker]:
    """Publishes jobs as the web portal does, and looks at queues as an operator does."""
    broker = Broker(broker_url)
    await broker.connect()
    yield broker
    await broker.close()


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service() -> AsyncIterator[StartService]:
    """Start services from a config dict; every one is stopped after the test."""
    started: list[Service] = []

    async def start(config: dict[str, Any], **kwargs: Any) -> Service:
        settings: Settings = build_settings(config)
        service = Service(settings, **kwargs)
        started.append(service)
        await service.start()
        return service

    yield start
    for service in reversed(started):
        await service.stop()
