"""Faults on a real three-node cluster: a queue leader dies mid-work, then two nodes of three.

Figures each test states: lost 0; duplicates within the README's bound (receipts: at most the
prefetch in flight; newsletters: at most 128 per process); consumers back on a surviving node
within RECOVERY_SECONDS; a worker without a quorum backs off (CPU time bounded).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mailer.adapters.broker import Broker
from mailer.parts.broker import BrokerConnection
from tests.cluster.conftest import Cluster, amqp_port
from tests.conftest import ROOT, StartService
from tests.support.jobs import encode, receipt
from tests.support.newsletters import issue, outcomes, people, subscribe, until_state
from tests.support.processes import amailer, environment
from tests.support.smtp import SmtpServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)
RECOVERY_SECONDS = 15.0
RECEIPT_DUPLICATE_BOUND = 16  # the prefetch these tests configure
NEWSLETTER_DUPLICATE_BOUND = 128


def cluster_config(config: dict[str, Any], cluster: Cluster, vhost: str) -> dict[str, Any]:
    config["broker"].update(
        url=",".join(cluster.urls(vhost)),
        prefetch=RECEIPT_DUPLICATE_BOUND,
        heartbeat=2,
        reconnect_delay=0.2,
        max_reconnect_delay=1,
        publish_timeout=3,
    )
    return config


async def publish_receipts(portal: Broker, addresses: list[str]) -> None:
    for address in addresses:
        job = receipt(to={"email": address, "name": "Klient"})
        await portal.publish(encode(job), routing_key="receipt")


def copies(smtp_server: SmtpServer, domain: str) -> Counter[str]:
    return Counter(r for m in smtp_server.received for r in m.rcpt_tos if r.endswith(domain))


async def test_the_leader_node_dies_mid_issue_and_mid_receipts(
    cluster: Cluster,
    config: dict[str, Any],
    start_service: StartService,
    smtp_server: SmtpServer,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    await asyncio.to_thread(cluster.ensure_all_running)
    vhost = await asyncio.to_thread(cluster.new_vhost)
    audience = people(300, domain="news.example.pl")
    await subscribe(database_url, audience)
    smtp_server.data_delay = 0.01
    service = await start_service(cluster_config(config, cluster, vhost))
    worker_broker = service.part(BrokerConnection).broker
    first = worker_broker.node
    leader = await asyncio.to_thread(cluster.leader, vhost, "mailer.receipts", 2)
    assert first == f"127.0.0.1:{amqp_port(leader)}"
    assert await asyncio.to_thread(cluster.leader, vhost, "mailer.newsletters", 2) == leader
    survivors = tuple(n for n in (1, 2, 3) if n != leader)
    portal = Broker(cluster.urls(vhost, survivors), publish_timeout=10)
    await portal.connect()
    try:
        job = issue()
        await portal.publish(encode(job), routing_key="newsletter")
        receipts = [f"r{n}@shop.example.pl" for n in range(60)]
        await publish_receipts(portal, receipts)

        async def midway() -> bool:
            return (
                len(copies(smtp_server, "shop.example.pl")) >= 5
                and len(copies(smtp_server, "news.example.pl")) >= 20
            )

        await eventually(midway, timeout=60)
        stopped = time.monotonic()
        await asyncio.to_thread(cluster.stop, leader)

        async def consuming_elsewhere() -> bool:
            return worker_broker.ready and worker_broker.node != first

        await eventually(consuming_elsewhere, timeout=60, interval=0.1)
        recovered = time.monotonic() - stopped
        late = ["late@shop.example.pl"]
        await publish_receipts(portal, late)

        async def all_receipts() -> bool:
            return set(copies(smtp_server, "shop.example.pl")) == set(receipts + late)

        await eventually(all_receipts, timeout=90)
        await until_state(db, job["id"], "done", timeout=120)
        assert await outcomes(db, job["id"]) == {"sent": len(audience)}
        received_receipts = copies(smtp_server, "shop.example.pl")
        received_news = copies(smtp_server, "news.example.pl")
        receipt_dups = sum(received_receipts.values()) - len(received_receipts)
        news_dups = sum(received_news.values()) - len(received_news)
        figures = (
            f"lost 0 of {len(receipts) + 1} receipts and {len(audience)} newsletters; "
            f"duplicates {receipt_dups} receipts (bound {RECEIPT_DUPLICATE_BOUND}), "
            f"{news_dups} newsletters (bound {NEWSLETTER_DUPLICATE_BOUND}); consumers back on "
            f"{worker_broker.node} {recovered:.1f}s after node {leader} was stopped"
        )
        print(figures)
        assert set(received_news) == {email for email, _, _ in audience}, figures
        assert receipt_dups <= RECEIPT_DUPLICATE_BOUND, figures
        assert news_dups <= NEWSLETTER_DUPLICATE_BOUND, figures
        assert recovered < RECOVERY_SECONDS, figures
    finally:
        await portal.close()
        await asyncio.to_thread(cluster.ensure_all_running)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_two_nodes_of_three_down_refuses_publishes_and_the_worker_backs_off(
    cluster: Cluster,
    config: dict[str, Any],
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    await asyncio.to_thread(cluster.ensure_all_running)
    vhost = await asyncio.to_thread(cluster.new_vhost)
    env = environment(cluster_config(config, cluster, vhost))
    assert (await amailer("migrate", env=env)).returncode == 0
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "mailer", "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    job_file = tmp_path / "receipt.json"
    try:
        before = [f"b{n}@shop.example.pl" for n in range(5)]
        for address in before:
            job_file.write_bytes(encode(receipt(to={"email": address, "name": "K"})))
            assert (await amailer("enqueue", str(job_file), env=env)).returncode == 0

        async def delivered(addresses: list[str]) -> bool:
            return set(addresses) <= set(copies(smtp_server, "shop.example.pl"))

        await eventually(lambda: delivered(before), timeout=60)

        await asyncio.gather(*(asyncio.to_thread(cluster.stop, n) for n in (1, 2)))
        job_file.write_bytes(encode(receipt(to={"email": "refused@shop.example.pl"})))
        refused = await amailer("enqueue", str(job_file), env=env)
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mailer: "), refused.stderr
        assert "Traceback" not in refused.stderr

        await asyncio.sleep(2)  # past the first reconnection attempts
        cpu_before, log_before, t = (
            cpu_seconds(worker.pid),
            log_path.stat().st_size,
            time.monotonic(),
        )
        await asyncio.sleep(6)
        cpu = cpu_seconds(worker.pid) - cpu_before
        window = time.monotonic() - t
        log_bytes = log_path.stat().st_size - log_before
        figures = (
            f"worker CPU {cpu:.2f}s and {log_bytes} log bytes in {window:.1f}s without a quorum"
        )
        print(figures, "; enqueue said:", lines[0])
        assert worker.poll() is None, "the worker keeps running"
        assert cpu < 0.25 * window, figures
        assert log_bytes < 20_000, figures
        assert "lost or refused" in log_path.read_text(), "the worker says it moved on"

        await asyncio.gather(*(asyncio.to_thread(cluster.start, n) for n in (1, 2)))
        after = ["after@shop.example.pl"]
        job_file.write_bytes(encode(receipt(to={"email": after[0], "name": "K"})))

        async def accepted() -> bool:
            return (await amailer("enqueue", str(job_file), env=env)).returncode == 0

        await eventually(accepted, timeout=60, interval=1)
        await eventually(lambda: delivered(after), timeout=60)
        got = copies(smtp_server, "shop.example.pl")
        assert all(got[a] == 1 for a in before + after), f"lost 0, duplicated 0: {got}"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        await asyncio.to_thread(cluster.ensure_all_running)
