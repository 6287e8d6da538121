"""Running `mailer` as the operator does: real processes with settings in the environment."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import Any

from tests.conftest import ROOT

SECTIONS = (
    "broker",
    "database",
    "smtp",
    "dkim",
    "http",
    "admin",
    "security",
    "sender",
    "retry",
    "worker",
)


def environment(config: dict[str, Any], **extra: str) -> dict[str, str]:
    """The test's settings as the environment variables an operator would set."""
    env = {"PATH": os.environ["PATH"], "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml")}
    for section in (*SECTIONS, "newsletter"):
        for key, value in config.get(section, {}).items():
            if not isinstance(value, dict):
                env[f"MAILER_{section}_{key}".upper()] = str(value)
    env.update(extra)
    return env


def mailer(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        input=stdin.decode() if stdin else None,
    )


async def amailer(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """`mailer` from an async test: the process runs while the test's event loop goes on, so
    a service running in the test's own loop keeps its heartbeat and its consumers."""
    return await asyncio.to_thread(mailer, *args, env=env, stdin=stdin)


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
