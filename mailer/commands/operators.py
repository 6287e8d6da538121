"""`mailer operator add|passwd|remove NAME`: accounts for the console.

The password is read from a prompt (typed twice) or, when standard input is not a terminal,
from its first line; never from the command line, where other users and the shell history
would see it.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from typing import TextIO

import asyncpg

from mailer.adapters.operators import ROLES, Operators, Role
from mailer.commands.running import Subcommands, runs_async, with_database
from mailer.config import Settings
from mailer.core.passwords import check_new_password, hash_password
from mailer.errors import MailerError

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def add_parser(commands: Subcommands) -> None:
    operator = commands.add_parser("operator", help="operator accounts for the console")
    operator_commands = operator.add_subparsers(
        dest="operator_command", required=True, metavar="ACTION"
    )
    operator_add = operator_commands.add_parser(
        "add", help="a new account; the password is read from a prompt or standard input"
    )
    operator_add.add_argument("name", metavar="NAME")
    operator_add.add_argument("--role", choices=ROLES, required=True)
    operator_passwd = operator_commands.add_parser("passwd", help="a new password")
    operator_passwd.add_argument("name")
    operator_remove = operator_commands.add_parser("remove", help="delete the account")
    operator_remove.add_argument("name")
    for parser in (operator_add, operator_passwd, operator_remove):
        runs_async(parser, change_account)


async def change_account(args: argparse.Namespace, settings: Settings) -> int:
    """The password is read before the database is opened."""
    password = None if args.operator_command == "remove" else read_password()

    async def change(pool: asyncpg.Pool) -> int:
        accounts = Operators(pool)
        if args.operator_command == "add":
            assert password is not None
            print(await add(accounts, args.name, args.role, password))
        elif args.operator_command == "passwd":
            assert password is not None
            print(await passwd(accounts, args.name, password))
        else:
            print(await remove(accounts, args.name))
        return 0

    return await with_database(settings, change)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise MailerError(
            f"operator name {name!r}: lowercase letters, digits, '.', '_' and '-', up to 63"
        )
    return name


def read_password(stdin: TextIO | None = None) -> str:
    stdin = stdin or sys.stdin
    if stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise MailerError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    problem = check_new_password(password)
    if problem is not None:
        raise MailerError(problem)
    return password


async def add(operators: Operators, name: str, role: Role, password: str) -> str:
    if not await operators.add(check_name(name), role, hash_password(password)):
        raise MailerError(f"operator {name} exists; use `mailer operator passwd {name}`")
    await operators.audit("cli", "operator add", target=name, result="done", detail=role)
    return f"operator {name} added ({role})"


async def passwd(operators: Operators, name: str, password: str) -> str:
    if not await operators.set_password(name, hash_password(password)):
        raise MailerError(f"no operator {name}")
    await operators.audit("cli", "operator passwd", target=name, result="done")
    return f"operator {name}: password changed, sessions ended"


async def remove(operators: Operators, name: str) -> str:
    if not await operators.remove(name):
        raise MailerError(f"no operator {name}")
    await operators.audit("cli", "operator remove", target=name, result="done")
    return f"operator {name} removed"
