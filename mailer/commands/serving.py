"""`mailer run`, `worker`, `web` and `bounces serve`: the service in the foreground, until
SIGTERM or SIGINT, with the parts each one names (mailer/service.py)."""

from __future__ import annotations

import argparse
import asyncio

from mailer.commands.running import Run, Subcommands, runs
from mailer.config import Settings
from mailer.service import Service


def add_parser(commands: Subcommands) -> None:
    for name, text, worker, web in (
        ("run", "the worker and the HTTP service in one process", True, True),
        ("worker", "the worker alone", True, False),
        ("web", "the HTTP service alone", False, True),
    ):
        runs(commands.add_parser(name, help=text), _serving(run_worker=worker, run_web=web))


def serve_bounces(args: argparse.Namespace, settings: Settings) -> int:
    """The bounce receiver alone ([bounces] listen)."""
    return _serve(Service(settings, run_worker=False, run_web=False, run_bounces=True))


def _serving(*, run_worker: bool, run_web: bool) -> Run:
    def serve(args: argparse.Namespace, settings: Settings) -> int:
        return _serve(Service(settings, run_worker=run_worker, run_web=run_web))

    return serve


def _serve(service: Service) -> int:
    asyncio.run(service.run_until_signalled())
    return 0
