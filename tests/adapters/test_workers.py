"""Worker processes in the `workers` table: real processes register, heartbeat, stop cleanly
or die, and operators see which are alive, gone or stopped."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from typing import Any

import asyncpg

from mailer.adapters.workers import WorkerProcess, Workers
from mailer.build import VERSION
from tests.support.processes import amailer, environment, free_port, start
from tests.support.waiting import eventually


async def listed(database_url: str) -> dict[int, WorkerProcess]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        return {process.pid: process for process in await Workers(pool).list()}
    finally:
        await pool.close()


def stop(process: subprocess.Popen[str], how: signal.Signals) -> str:
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    return stderr


async def test_worker_processes_show_as_alive_then_stopped_or_gone(
    config: dict[str, Any], database_url: str
) -> None:
    envs = []
    for _ in range(2):
        config["http"]["port"] = free_port()
        envs.append(environment(config))
    assert (await amailer("migrate", env=envs[0])).returncode == 0
    clean = start("worker", env=envs[0])
    killed = start("run", env=envs[1])
    try:

        async def both_alive() -> dict[int, WorkerProcess] | None:
            found = await listed(database_url)
            pids = {clean.pid, killed.pid}
            alive = {pid for pid, p in found.items() if p.presence == "alive"}
            return found if pids <= alive else None

        found = await eventually(both_alive, timeout=60)
        first = found[clean.pid]
        assert first.host == socket.gethostname()
        assert first.version == VERSION
        assert first.runs == ("worker",)
        assert found[killed.pid].runs == ("worker", "web")
        assert first.stopped_at is None

        async def beat_again() -> bool:  # every lease / 3: a second in the tests
            return (await listed(database_url))[clean.pid].heartbeat_at > first.heartbeat_at

        await eventually(beat_again, timeout=10)
        shown = (await amailer("workers", env=envs[0])).stdout.splitlines()
        assert shown[0].split()[:3] == ["PRESENCE", "HOST", "PID"]
        rows = {int(line.split()[2]): line for line in shown[1:-1]}
        assert rows[clean.pid].startswith("alive")
        assert f" {VERSION} " in rows[clean.pid] and " worker " in rows[clean.pid]
        assert " worker+web " in rows[killed.pid]
        assert shown[-1].startswith("measured at ")

        stderr = await asyncio.to_thread(stop, clean, signal.SIGTERM)
        assert clean.returncode == 0, stderr
        after_stop = (await listed(database_url))[clean.pid]
        assert after_stop.presence == "stopped"
        assert after_stop.stopped_at is not None

        await asyncio.to_thread(stop, killed, signal.SIGKILL)  # no goodbye
        assert (await listed(database_url))[killed.pid].presence == "alive"  # not yet

        async def gone() -> bool:  # silent for longer than a lease (3 s in the tests)
            return (await listed(database_url))[killed.pid].presence == "gone"

        await eventually(gone, timeout=15)
        dead = (await listed(database_url))[killed.pid]
        assert dead.silent_for >= 3
        assert dead.stopped_at is None
        shown = (await amailer("workers", env=envs[0])).stdout.splitlines()
        presence = {int(line.split()[2]): line.split()[0] for line in shown[1:-1]}
        assert presence == {clean.pid: "stopped", killed.pid: "gone"}
        assert shown[1].startswith("gone")  # what needs looking at comes first
    finally:
        for process in (clean, killed):
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
