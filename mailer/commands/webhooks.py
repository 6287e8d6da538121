"""`mailer webhooks add|list|rotate-secret|disable|enable|remove|replay`: an account's HTTPS
endpoints, which receive its events signed per Standard Webhooks 1.0.

A secret is made by mailer, shown once (at `add` and `rotate-secret`) and stored sealed
under a key derived from `[security] secret_key`. After a rotation the old secret signs
too for `[webhooks] rotation_hours` (or `--overlap-hours`), so that the receiver can switch.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO
from uuid import UUID

import asyncpg

from mailer.adapters.operators import Operators
from mailer.adapters.webhooks import EndpointView, WebhookEndpoints, sealing_keys
from mailer.commands.running import Subcommands, on_database
from mailer.config import Settings
from mailer.core.events import DEFAULT_ACCOUNT
from mailer.core.jobs import SLUG
from mailer.core.terminal import one_line
from mailer.core.times import typed_moment, when
from mailer.core.webhooks.targets import check_url
from mailer.errors import MailerError


def add_parser(commands: Subcommands) -> None:
    hooks = commands.add_parser("webhooks", help="HTTPS endpoints that receive events")
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register an endpoint; prints its secret, once")
    add.add_argument("url", metavar="URL", help="https://… (no user, no fragment)")
    add.add_argument("--account", default=DEFAULT_ACCOUNT)
    add.add_argument("--batch-size", type=int, help="events per request (default: [webhooks])")
    listing = actions.add_parser("list", help="endpoints, their state, backlog and failures")
    listing.add_argument("--account")
    rotate = actions.add_parser("rotate-secret", help="a new secret; the old signs a while")
    rotate.add_argument("--overlap-hours", type=float, help="default: [webhooks] rotation_hours")
    disable = actions.add_parser("disable", help="send nothing until enabled")
    disable.add_argument("--reason", default="disabled by an operator")
    enable = actions.add_parser("enable", help="active again, its failures forgotten")
    remove = actions.add_parser("remove", help="forget the endpoint")
    replay = actions.add_parser("replay", help="deliver again the kept events since a moment")
    replay.add_argument(
        "--since", required=True, help="ISO 8601 (UTC unless an offset follows), or a time ago: 2h"
    )
    for action in (rotate, disable, enable, remove, replay):
        action.add_argument("endpoint", metavar="ID", type=_endpoint_id)
    for action in (add, listing, rotate, disable, enable, remove, replay):
        on_database(action, _run)


def _since(text: str) -> datetime:
    try:
        return typed_moment(text, datetime.now(UTC))
    except ValueError as exc:
        raise MailerError(f"--since: {exc}") from None


def _endpoint_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an endpoint id is a UUID") from None


async def _run(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    endpoints = WebhookEndpoints(pool, sealing_keys(settings))
    done = await run(args, settings, endpoints, sys.stdout)
    if done is not None:  # audited as the console's actions are
        target, detail = done
        await Operators(pool).audit(
            "cli", f"webhook {args.webhooks_command}", target=target, result="done", detail=detail
        )
    return 0


async def run(
    args: argparse.Namespace, settings: Settings, endpoints: WebhookEndpoints, out: TextIO
) -> tuple[str, str] | None:
    """Does the action; what changed (endpoint, detail) for the audit, None for a listing."""
    action = args.webhooks_command
    hooks = settings.webhooks
    if action == "add":
        if not SLUG.fullmatch(args.account):
            raise MailerError("--account: lowercase letters, digits and '-'")
        try:
            checked = check_url(args.url)
        except ValueError as exc:
            raise MailerError(f"URL: {exc}") from None
        url = checked.url
        size = args.batch_size or hooks.batch_size
        if not 1 <= size <= 1000:
            raise MailerError("--batch-size: from 1 to 1000")
        made, secret = await endpoints.register(args.account, url, batch_size=size)
        print(f"endpoint {made} for account {args.account}", file=out)
        print(f"secret   {secret}", file=out)
        print("the secret is shown this once: give it to the receiver now", file=out)
        # the audit names the host: a URL's path or query may hold the receiver's token
        return str(made), f"{args.account}: https://{checked.host}/…"
    if action == "list":
        for line in endpoint_lines(await endpoints.views(args.account)):
            print(line, file=out)
        return None
    endpoint: UUID = args.endpoint
    detail = ""
    try:
        if action == "rotate-secret":
            hours = hooks.rotation_hours if args.overlap_hours is None else args.overlap_hours
            secret = await endpoints.rotate_secret(endpoint, timedelta(hours=hours))
            print(f"secret   {secret}", file=out)
            print(f"the old secret signs too for {hours:g} hours; shown this once", file=out)
            detail = f"the old secret signs for {hours:g} hours"
        elif action == "disable":
            await endpoints.disable(endpoint, args.reason)
            print(f"endpoint {endpoint} disabled", file=out)
            detail = args.reason
        elif action == "enable":
            await endpoints.enable(endpoint)
            print(f"endpoint {endpoint} enabled", file=out)
        elif action == "remove":
            await endpoints.remove(endpoint)
            print(f"endpoint {endpoint} removed", file=out)
        else:
            position = await endpoints.replay(endpoint, _since(args.since))
            print(f"endpoint {endpoint} replays from position {position + 1}", file=out)
            detail = f"since {args.since}: from position {position + 1}"
    except LookupError as exc:
        raise MailerError(str(exc)) from None
    return str(endpoint), detail


def endpoint_lines(found: list[EndpointView]) -> list[str]:
    lines = []
    for one in found:
        lines.append(f"{one.id}  {one.account}  {one.shown_state}  {one_line(one.url, 120)}")
        lines.append(
            f"    backlog {one.backlog}, delivered {one.delivered}, batch {one.batch_size};"
            f" last success {when(one.last_success_at)}; next attempt {when(one.next_attempt_at)}"
        )
        if one.last_failure is not None:
            lines.append(
                f"    last failure {when(one.last_failure_at)}: {one_line(one.last_failure, 200)}"
                f" ({one.attempts} in a row)"
            )
        if one.disabled_reason is not None:
            lines.append(
                f"    disabled {when(one.disabled_at)}: {one_line(one.disabled_reason, 200)}"
            )
        if one.rotating_until is not None:
            lines.append(f"    the previous secret signs too until {when(one.rotating_until)}")
    return lines or ["no webhook endpoints"]
