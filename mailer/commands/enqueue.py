"""`mailer enqueue FILE`: publish a job file as the portal would, checked first (the same
checks the worker makes) unless `--no-check` asks for the bytes as they are."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mailer.adapters.broker import Broker
from mailer.adapters.parked import body_ref
from mailer.adapters.topology import ROUTES
from mailer.commands.checks import check_job
from mailer.commands.running import Subcommands, read_input, runs_async, with_broker
from mailer.config import Settings
from mailer.errors import MailerError


def add_parser(commands: Subcommands) -> None:
    enqueue = commands.add_parser("enqueue", help="publish a job file, as the portal would")
    enqueue.add_argument("file", type=Path, help="a JSON job; - reads standard input")
    enqueue.add_argument("--routing-key", help="route by this key instead of the job's kind")
    enqueue.add_argument(
        "--no-check",
        action="store_true",
        help="publish the bytes without checking the job first (to try the dead-letter queue)",
    )
    runs_async(enqueue, enqueue_file)


async def enqueue_file(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    body = read_input(path)  # one small file, before any I/O starts
    if args.no_check:
        routing_key, job_id = _route_unchecked(body, args.routing_key, path)
    else:
        job = check_job(body, settings, source=str(path))
        routing_key, job_id = args.routing_key or job.kind, str(job.id)

    async def publish(broker: Broker) -> int:
        await broker.publish(body, routing_key=routing_key, message_id=job_id)
        print(f"published {job_id or body_ref(body)} with routing key {routing_key}")
        return 0

    return await with_broker(settings, publish, name="enqueue")


def _route_unchecked(body: bytes, routing_key: str | None, path: Path) -> tuple[str, str | None]:
    job_id = None
    try:
        job = json.loads(body)
    except ValueError:
        job = None
    if isinstance(job, dict):
        job_id = job.get("id") if isinstance(job.get("id"), str) else None
        routing_key = routing_key or (job.get("kind") if job.get("kind") in ROUTES else None)
    if routing_key is None:
        raise MailerError(
            f"{path}: no known 'kind' to route by ({', '.join(ROUTES)}); give --routing-key"
        )
    return routing_key, job_id
