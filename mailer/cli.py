"""The `mailer` command: it parses, and runs what the command's module (mailer/commands)
named for it.

Exit status: 0 done, 1 failed (the message says why), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mailer import logs
from mailer.commands import (
    bounces,
    dead_letters,
    dkim,
    enqueue,
    events,
    issues,
    migrate,
    operators,
    serving,
    subscribers,
    suppressions,
    webhooks,
    workers,
)
from mailer.commands.running import Run
from mailer.config import load_settings
from mailer.errors import ConfigError, MailerError

log = logging.getLogger("mailer")
# In the order `mailer --help` lists them.
COMMANDS = (
    migrate,
    serving,  # run, worker, web
    enqueue,
    dead_letters,  # dlq
    subscribers,
    issues,
    workers,
    operators,
    dkim,
    bounces,
    suppressions,
    events,
    webhooks,
)


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(
        prog="mailer", description="Delivery worker for transaction receipts and newsletters."
    )
    found.add_argument(
        "--config", type=Path, help="TOML file (default: $MAILER_CONFIG or config/mailer.toml)"
    )
    commands = found.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(commands)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings, unknown = load_settings(args.config)
        logs.setup(settings.log.level)
        for name in unknown:
            log.warning("ignoring %s: no such setting", name)
        run: Run = args.run
        return run(args, settings)
    except ConfigError as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 2
    except MailerError as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
