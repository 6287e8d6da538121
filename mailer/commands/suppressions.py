"""`mailer suppressions list|show|lift|add`: the addresses mail no longer goes to.

Addresses are stored as keyed hashes only, so an operator names one by typing it (it is
hashed with the same key, never stored or printed) or by the reference the logs and lists
show (`#1a2b3c4d`). Erasures are listed but never lifted: the person asked to be forgotten.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import asyncpg

from mailer.adapters.suppressions import Suppression, Suppressions
from mailer.commands.running import Subcommands, address_hash_key, on_database
from mailer.config import Settings
from mailer.core.addresses import InvalidAddress, address_ref, typed_address_key
from mailer.core.consent import SUPPRESSION_REASONS
from mailer.core.times import WIDTH, when
from mailer.errors import MailerError


def add_parser(commands: Subcommands) -> None:
    suppressions = commands.add_parser("suppressions", help="the suppression list")
    actions = suppressions.add_subparsers(
        dest="suppressions_command", required=True, metavar="ACTION"
    )
    listing = actions.add_parser("list", help="suppressions in force, newest first")
    listing.add_argument("--reason", choices=SUPPRESSION_REASONS)
    listing.add_argument("--limit", type=int, default=100)
    for name, text in (
        ("show", "one address's suppression: reason, source report, dates"),
        ("lift", "mail the address again (bounces, complaints, operators' suppressions)"),
        ("add", "suppress an address for everything, receipts included"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("address", metavar="ADDRESS", help="an e-mail address or #ref")
        if name == "add":
            action.add_argument("--note", default="added by an operator")
        on_database(action, _run)
    on_database(listing, _run)


async def _run(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> int:
    return await run(args, Suppressions(pool), address_hash_key(settings), sys.stdout)


def _line(one: Suppression) -> str:
    expiry = f"until {when(one.expires_at)}" if one.expires_at else "for good"
    return (
        f"{address_ref(one.address_key)}  {one.reason:12}  {when(one.created_at)}  "
        f"{expiry:{WIDTH + 6}}  "
        f"report {one.report_id or '-':<8}  {one.detail or '-'}"
    )


async def _key(typed: str, suppressions: Suppressions, hash_key: bytes) -> bytes:
    """The keyed hash an operator means: of a typed address, or the one a #ref names."""
    if typed.startswith("#"):
        try:
            prefix = bytes.fromhex(typed[1:])
        except ValueError:
            raise MailerError(f"{typed}: a reference is # and hex digits") from None
        found = await suppressions.find(prefix)
        if len(found) != 1:
            raise MailerError(f"{typed}: {'no' if not found else 'more than one'} suppression")
        return found[0].address_key
    try:
        return typed_address_key(hash_key, typed)
    except InvalidAddress as exc:
        raise MailerError(str(exc)) from None


async def run(
    args: argparse.Namespace, suppressions: Suppressions, hash_key: bytes, out: TextIO
) -> int:
    command = args.suppressions_command
    if command == "list":
        found = await suppressions.active(reason=args.reason, limit=args.limit)
        for one in found:
            print(_line(one), file=out)
        print(f"{len(found)} suppression(s) shown", file=sys.stderr)
        return 0
    key = await _key(args.address, suppressions, hash_key)
    ref = address_ref(key)
    if command == "show":
        shown = await suppressions.show(key)
        if shown is None:
            print(f"{ref}: not suppressed", file=out)
            return 1
        print(_line(shown), file=out)
        return 0
    if command == "lift":
        lifted = await suppressions.lift(key)
        if lifted is None:
            print(f"{ref}: nothing to lift (not suppressed, or erased)", file=out)
            return 1
        print(f"{ref}: {lifted} suppression lifted", file=out)
        return 0
    added = await suppressions.add(key, args.note)
    print(f"{ref}: {'suppressed' if added else 'already suppressed'}", file=out)
    return 0
