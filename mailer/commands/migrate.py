"""`mailer migrate`: the database schema, then the broker's topology. Parked jobs left in
mailer.dead go into the table first; an older mailer declared that queue without a delivery
limit, and it is declared anew once emptied, while no worker consumes."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from mailer.adapters import database
from mailer.adapters.broker import Broker
from mailer.adapters.dead_letters import DeadQueueUpgrade, move_dead_queue
from mailer.adapters.parked import ParkedJobs
from mailer.adapters.topology import DEAD_QUEUE
from mailer.assembly.prepared import retry_tiers
from mailer.commands.running import Subcommands, runs_async, with_broker, with_database
from mailer.config import Settings


def add_parser(commands: Subcommands) -> None:
    migrate = commands.add_parser(
        "migrate", help="create or upgrade the database schema and declare the broker topology"
    )
    runs_async(migrate, migrate_all)


async def migrate_all(args: argparse.Namespace, settings: Settings) -> int:
    applied = await database.migrate(settings.database.url.get_secret_value())
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"database schema at version {database.LATEST_VERSION}")

    async def declare(broker: Broker) -> int:
        async def move(pool: asyncpg.Pool) -> DeadQueueUpgrade:
            return await move_dead_queue(broker, ParkedJobs(pool))

        _tell(await with_database(settings, move))
        await broker.declare(round(t * 1000) for t in retry_tiers(settings))
        print("broker topology declared")
        return 0

    return await with_broker(settings, declare, name="migrate")


def _tell(upgrade: DeadQueueUpgrade) -> None:
    if upgrade.moved:
        print(f"moved {upgrade.moved} parked job(s) from mailer.dead into the database")
    if upgrade.replaced:
        print(f"{DEAD_QUEUE} declared anew, with a delivery limit")
    if upgrade.lost:
        print(
            f"mailer: {upgrade.lost} message(s) that reached {DEAD_QUEUE} meanwhile were lost",
            file=sys.stderr,
        )
    if upgrade.busy:
        print(
            f"{DEAD_QUEUE} kept as an older mailer declared it (no delivery limit): workers"
            f" consume {', '.join(upgrade.busy)}; stop them and run `mailer migrate` again"
            " to declare it anew",
            file=sys.stderr,
        )
