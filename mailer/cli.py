"""The `mailer` command.

Exit status: 0 done, 1 failed (the message says why), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from mailer import logs
from mailer.adapters import database
from mailer.adapters.bounces import BounceReports
from mailer.adapters.broker import DEAD_QUEUE, ROUTES, Broker
from mailer.adapters.dead_letters import DeadLetters, DeadQueueUpgrade, move_dead_queue
from mailer.adapters.issues import Issues
from mailer.adapters.ledger_views import LedgerViews
from mailer.adapters.operators import Operators
from mailer.adapters.parked import ParkedJobs, body_ref
from mailer.adapters.subscribers import Subscribers
from mailer.adapters.suppressions import Suppressions
from mailer.adapters.workers import Workers
from mailer.commands import bounces as bounce_commands
from mailer.commands import dead_letters as dead_letter_commands
from mailer.commands import operators, person, previews
from mailer.commands import subscribers as subscriber_commands
from mailer.commands import suppressions as suppression_commands
from mailer.commands.checks import check_job
from mailer.commands.issues import change, describe, issue_rows, watch
from mailer.commands.subscribers import BadFile, import_file
from mailer.commands.workers import worker_rows
from mailer.config import Settings, load_settings
from mailer.core.signing import generate_key, txt_strings
from mailer.core.tokens import derive_key
from mailer.errors import ConfigError, MailerError
from mailer.service import Service, load_signer, retry_tiers

log = logging.getLogger("mailer")
T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailer", description="Delivery worker for transaction receipts and newsletters."
    )
    parser.add_argument(
        "--config", type=Path, help="TOML file (default: $MAILER_CONFIG or config/mailer.toml)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "migrate", help="create or upgrade the database schema and declare the broker topology"
    )
    commands.add_parser("run", help="the worker and the HTTP service in one process")
    commands.add_parser("worker", help="the worker alone")
    commands.add_parser("web", help="the HTTP service alone")

    enqueue = commands.add_parser("enqueue", help="publish a job file, as the portal would")
    enqueue.add_argument("file", type=Path, help="a JSON job; - reads standard input")
    enqueue.add_argument("--routing-key", help="route by this key instead of the job's kind")
    enqueue.add_argument(
        "--no-check",
        action="store_true",
        help="publish the bytes without checking the job first (to try the dead-letter queue)",
    )

    dead_letter_commands.add_parser(commands)

    subscriber_commands.add_parser(commands)  # mailer/commands/subscribers.py and person.py

    issue = commands.add_parser("issue", help="a newsletter issue being sent")
    issue_commands = issue.add_subparsers(dest="issue_command", required=True, metavar="ACTION")
    listing = issue_commands.add_parser(
        "list", help="issues newest first: state, list, subject, times, counts by outcome"
    )
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--state", choices=("scheduled", "sending", "paused", "cancelled", "done"))
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    status = issue_commands.add_parser("status", help="counts by outcome, rate and ETA")
    status.add_argument("issue_id", type=UUID, metavar="ISSUE_ID")
    status.add_argument("--watch", action="store_true", help="a live progress bar until done")
    for name, text in (
        ("pause", "stop sending within seconds"),
        ("resume", "carry on where it stopped"),
        ("cancel", "send nothing more; the rest is marked cancelled"),
    ):
        action = issue_commands.add_parser(name, help=text)
        action.add_argument("issue_id", type=UUID, metavar="ISSUE_ID")
    previews.add_commands(issue_commands)

    commands.add_parser(
        "workers", help="worker processes: alive, gone (silent for a lease) or stopped"
    )

    operators.add_parser(commands)

    dkim = commands.add_parser("dkim", help="DKIM keys")
    dkim_commands = dkim.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    keygen = dkim_commands.add_parser("keygen", help="make a key and print its DNS TXT record")
    keygen.add_argument(
        "--type",
        choices=("rsa", "ed25519"),
        default="rsa",
        help="rsa (2048 bits, default) or ed25519",
    )
    keygen.add_argument("--domain", help="signing domain (default: [dkim] domain)")
    keygen.add_argument("--selector", help="selector (default: [dkim] selector)")
    keygen.add_argument(
        "--out", type=Path, help="where to write the PEM key (default: [dkim] key_file)"
    )
    keygen.add_argument(
        "--force", action="store_true", help="overwrite an existing file (with --out only)"
    )
    # Bounces and suppressions: mailer/commands/bounces.py and suppressions.py.
    bounce_commands.add_parser(commands)
    suppression_commands.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, unknown = load_settings(args.config)
        logs.setup(settings.log.level)
        for name in unknown:
            log.warning("ignoring %s: no such setting", name)
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 2
    except MailerError as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.command
    if command in ("run", "worker", "web"):
        service = Service(settings, run_worker=command != "web", run_web=command != "worker")
        asyncio.run(service.run_until_signalled())
        return 0
    if command == "dkim":
        return _keygen(args, settings)
    if command == "issue" and args.issue_command == "preview":
        return previews.preview(args, settings)
    if command == "issue" and args.issue_command == "test":
        return asyncio.run(previews.send_test(args, settings, load_signer(settings)))
    if command == "bounces" and args.bounces_command == "serve":
        service = Service(settings, run_worker=False, run_web=False, run_bounces=True)
        asyncio.run(service.run_until_signalled())
        return 0
    handlers: dict[str, Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]] = {
        "migrate": _migrate,
        "enqueue": _enqueue,
        "dlq": _dlq,
        "subscribers": _subscribers,
        "issue": _issue,
        "workers": _workers,
        "bounces": _bounces,
        "suppressions": _suppressions,
        "operator": _operator,
    }
    return asyncio.run(handlers[command](args, settings))


async def _with_broker(
    settings: Settings, call: Callable[[Broker], Awaitable[int]], *, name: str
) -> int:
    broker = Broker.from_settings(settings.broker, name=f"mailer {name}")
    await broker.connect()
    try:
        return await call(broker)
    finally:
        await broker.close()


async def _with_database(settings: Settings, call: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    pool = await database.open_pool(settings.database.url.get_secret_value(), size=2)
    try:
        return await call(pool)
    finally:
        await pool.close()


async def _subscribers(args: argparse.Namespace, settings: Settings) -> int:
    if args.subscribers_command == "unsubscribe":
        return await _unsubscribe(args, settings)
    if args.subscribers_command == "show":
        hash_key = derive_key(settings.security.address_secret(), "address")

        async def look(pool: asyncpg.Pool) -> int:
            views, suppressions = LedgerViews(pool), Suppressions(pool)
            return await person.show(args, views, suppressions, hash_key, sys.stdout)

        return await _with_database(settings, look)
    if args.list_slug not in settings.lists:
        raise ConfigError(f"no list {args.list_slug!r} in the configuration ([lists.<slug>])")
    path: Path = args.file
    if not path.is_file():  # noqa: ASYNC240 - before any I/O starts
        raise MailerError(f"{path}: no such file")
    try:
        codecs.lookup(args.encoding)
    except LookupError:
        raise ConfigError(f"--encoding: no such character set {args.encoding!r}") from None
    hash_key = derive_key(settings.security.address_secret(), "address")

    async def run(pool: asyncpg.Pool) -> int:
        subscribers = Subscribers(pool)
        list_id = (await subscribers.list_ids([args.list_slug]))[args.list_slug]
        try:
            report = await import_file(
                path,
                list_id=list_id,
                subscribers=subscribers,
                hash_key=hash_key,
                encoding=args.encoding,
            )
        except BadFile as exc:
            raise MailerError(f"{path}: {exc}") from None
        print(report.summary())
        return 1 if report.bad else 0

    return await _with_database(settings, run)


async def _unsubscribe(args: argparse.Namespace, settings: Settings) -> int:
    if args.list_slug is not None and args.list_slug not in settings.lists:
        raise ConfigError(f"no list {args.list_slug!r} in the configuration ([lists.<slug>])")
    hash_key = derive_key(settings.security.address_secret(), "address")

    async def leave(pool: asyncpg.Pool) -> int:
        subscribers = Subscribers(pool)
        lists = await subscribers.list_ids(settings.lists)
        return await person.unsubscribe(args, subscribers, lists, hash_key, sys.stdout)

    return await _with_database(settings, leave)


async def _issue(args: argparse.Namespace, settings: Settings) -> int:
    async def run(pool: asyncpg.Pool) -> int:
        locales = {slug: lst.default_locale for slug, lst in settings.lists.items()}
        issues = Issues(pool, default_locales=locales)
        if args.issue_command == "list":
            states = None if args.state is None else [args.state]
            found = await issues.newest(limit=args.limit, states=states)
            for line in issue_rows(found, as_json=args.json):
                print(line)
            return 0
        if args.issue_command == "status":
            progress = await (
                watch(issues, args.issue_id) if args.watch else issues.progress(args.issue_id)
            )
            if progress is None:
                raise MailerError(f"no issue {args.issue_id}")
            print(describe(progress))
            return 0
        try:
            print(await change(issues, args.issue_id, args.issue_command))
        except (LookupError, ValueError) as exc:
            raise MailerError(str(exc)) from None
        return 0

    return await _with_database(settings, run)


async def _workers(args: argparse.Namespace, settings: Settings) -> int:
    async def run(pool: asyncpg.Pool) -> int:
        for line in worker_rows(await Workers(pool).list()):
            print(line)
        return 0

    return await _with_database(settings, run)


async def _operator(args: argparse.Namespace, settings: Settings) -> int:
    password = None if args.operator_command == "remove" else operators.read_password()

    async def run(pool: asyncpg.Pool) -> int:
        accounts = Operators(pool)
        if args.operator_command == "add":
            assert password is not None
            print(await operators.add(accounts, args.name, args.role, password))
        elif args.operator_command == "passwd":
            assert password is not None
            print(await operators.passwd(accounts, args.name, password))
        else:
            print(await operators.remove(accounts, args.name))
        return 0

    return await _with_database(settings, run)


async def _bounces(args: argparse.Namespace, settings: Settings) -> int:
    async def run(pool: asyncpg.Pool) -> int:
        reports = BounceReports(pool)
        if args.bounces_command == "show":
            return await bounce_commands.show_report(args, reports, sys.stdout)
        return await bounce_commands.list_reports(args, reports, sys.stdout)

    return await _with_database(settings, run)


async def _suppressions(args: argparse.Namespace, settings: Settings) -> int:
    hash_key = derive_key(settings.security.address_secret(), "address")

    async def run(pool: asyncpg.Pool) -> int:
        return await suppression_commands.run(args, Suppressions(pool), hash_key, sys.stdout)

    return await _with_database(settings, run)


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = await database.migrate(settings.database.url.get_secret_value())
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"database schema at version {database.LATEST_VERSION}")

    async def declare(broker: Broker) -> int:
        # Parked jobs left in mailer.dead go into the table first; an older mailer declared
        # that queue without a delivery limit, and it is declared anew once emptied.
        async def move(pool: asyncpg.Pool) -> DeadQueueUpgrade:
            return await move_dead_queue(broker, ParkedJobs(pool))

        upgrade = await _with_database(settings, move)
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
        await broker.declare(round(t * 1000) for t in retry_tiers(settings))
        print("broker topology declared")
        return 0

    return await _with_broker(settings, declare, name="migrate")


async def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    try:
        body = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()  # noqa: ASYNC240 - one small file, before any I/O starts
    except OSError as exc:
        raise MailerError(f"cannot read {path}: {exc.strerror}") from None
    if args.no_check:
        routing_key, job_id = _route_unchecked(body, args.routing_key, path)
    else:
        job = check_job(body, settings, source=str(path))
        routing_key, job_id = args.routing_key or job.kind, str(job.id)

    async def publish(broker: Broker) -> int:
        await broker.publish(body, routing_key=routing_key, message_id=job_id)
        print(f"published {job_id or body_ref(body)} with routing key {routing_key}")
        return 0

    return await _with_broker(settings, publish, name="enqueue")


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


async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    """Parked jobs are read from the database; the broker is connected to only to requeue."""
    connected: list[Broker] = []

    async def broker() -> Broker:
        if not connected:
            found = Broker.from_settings(settings.broker, name="mailer dlq")
            await found.connect()
            connected.append(found)
        return connected[0]

    async def run(pool: asyncpg.Pool) -> int:
        parked = ParkedJobs(pool)
        if args.dlq_command in ("list", "show"):
            return await dead_letter_commands.look(args, parked, sys.stdout)
        try:
            dead = DeadLetters(parked, broker)
            return await dead_letter_commands.settle(args, dead, sys.stdout)
        finally:
            for found in connected:
                await found.close()

    return await _with_database(settings, run)


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    """With no options, the key [dkim] names (domain, selector, key_file); an existing key
    is never overwritten, only an explicit --out with --force replaces a file."""
    domain = args.domain or settings.dkim.domain
    selector = args.selector or settings.dkim.selector
    if not domain or not selector:
        raise ConfigError(
            "dkim keygen: give --domain and --selector (or set [dkim] domain and selector)"
        )
    out: Path | None = args.out or settings.dkim.key_file
    if out is None:
        raise ConfigError("dkim keygen: give --out (or set [dkim] key_file, MAILER_DKIM_KEY_FILE)")
    if args.force and args.out is None:
        raise ConfigError("dkim keygen: --force needs --out: [dkim] key_file is never overwritten")
    refusal = f"dkim keygen: {out} exists: not overwritten"
    if args.out is None:
        refusal += " (it is [dkim] key_file; to rotate, give a new --selector and --out)"
    else:
        refusal += " (--force replaces it)"
    if out.exists() and not args.force:
        raise MailerError(refusal)
    key = generate_key(args.type, domain=domain, selector=selector)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_private(out, key.pem, replace=args.force)
    except FileExistsError:
        raise MailerError(refusal) from None
    except OSError as exc:
        raise MailerError(f"dkim keygen: cannot write {out}: {exc.strerror}") from None
    strings = " ".join(f'"{part}"' for part in txt_strings(key.dns_record()))
    print(f"wrote {key.algorithm} key to {out}", file=sys.stderr)
    print(f"{selector}._domainkey.{domain}. IN TXT ( {strings} )")
    return 0


def write_private(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write a file only its owner can read, replacing any file there at once: a new file
    made 0600 from its first byte, then renamed over the old one (whose mode does not carry
    over), so no reader ever sees a partial key or a key open to others. With replace False
    it is linked into place instead, which fails (FileExistsError) if a file is there."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask or the directory's default ACL
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            temporary.unlink()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
