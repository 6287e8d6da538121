"""`mailer issue preview FILE` and `mailer issue test FILE --to ADDR…`: an issue job looked
at, and tried on a few test addresses, before it is enqueued (mailer/worker/previews.py).

`preview` writes `<issue id>.<locale>.html` and `.txt` for each locale asked (default: all)
into `--out` (default `var/preview`) and prints the subject and the files' paths. `test`
sends through the configured relay (or the embedded capture, as `mailer run` would), with
the worker's composer and DKIM signer, and prints each address's reply; nothing is written
to the database.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from mailer.adapters.capture import CaptureServer
from mailer.adapters.relay import Relay, tls_context
from mailer.assembly.prepared import load_signer
from mailer.commands.checks import mailing_lists, templates
from mailer.commands.running import Subcommands, read_input, runs, runs_async
from mailer.config import Settings, SmtpRelay
from mailer.core.locales import LOCALES, Locale
from mailer.core.messages import Mailbox, compose
from mailer.core.outcomes import Sent
from mailer.errors import ConfigError, InvalidJob, MailerError
from mailer.metrics import Metrics
from mailer.worker.previews import (
    Issue,
    prepare_trial,
    read_issue,
    render_preview,
    send_tests,
    test_addresses,
    trial_unsubscribe_url,
)
from mailer.worker.sending import Sender

DEFAULT_OUT = Path("var/preview")


def add_parser(issue_actions: Subcommands) -> None:
    made = issue_actions.add_parser(
        "preview", help="render an issue job as its recipients will see it, HTML and text"
    )
    made.add_argument("file", type=Path, help="a newsletter job (JSON); - reads standard input")
    made.add_argument("--locale", choices=LOCALES, help="one locale (default: every one)")
    made.add_argument("--name", help="greet this subscriber name (default: no name)")
    made.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the files (default {DEFAULT_OUT})",
    )
    test = issue_actions.add_parser(
        "test", help="send an issue job to a few test addresses, marked [TEST], not counted"
    )
    test.add_argument("file", type=Path, help="a newsletter job (JSON); - reads standard input")
    test.add_argument(
        "--to", nargs="+", required=True, metavar="ADDR", help="test addresses (at most 10)"
    )
    test.add_argument("--locale", choices=LOCALES, help="default: the list's default locale")
    runs(made, preview)
    runs_async(test, send_test)


def _issue(path: Path, settings: Settings) -> Issue:
    try:
        return read_issue(
            read_input(path),
            mailing_lists(settings),
            max_attachment_bytes=settings.worker.max_attachment_bytes,
        )
    except InvalidJob as exc:
        raise MailerError(f"{path}: not a valid issue: {exc.reason}") from None


def preview(args: argparse.Namespace, settings: Settings) -> int:
    issue = _issue(args.file, settings)
    renderer = templates(settings)
    out: Path = args.out
    locales: tuple[Locale, ...] = (args.locale,) if args.locale else LOCALES
    try:
        out.mkdir(parents=True, exist_ok=True)
        for locale in locales:
            url = trial_unsubscribe_url(settings.http.public_url, locale)
            try:
                rendered = render_preview(
                    issue, renderer, locale=locale, name=args.name, unsubscribe_url=url
                )
            except InvalidJob as exc:
                raise MailerError(f"{args.file}: not a valid issue: {exc.reason}") from None
            html = out / f"{issue.job.id}.{locale}.html"
            text = out / f"{issue.job.id}.{locale}.txt"
            html.write_text(rendered.html, encoding="utf-8")
            text.write_text(rendered.text, encoding="utf-8")
            print(f"{locale}: {rendered.subject}")
            print(f"  {html}")
            print(f"  {text}")
    except OSError as exc:
        raise MailerError(f"cannot write the preview in {out}: {exc.strerror}") from None
    return 0


def _recipients(addresses: list[str]) -> list[Mailbox]:
    try:
        return test_addresses(addresses)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None


@contextlib.asynccontextmanager
async def _relay(settings: Settings) -> AsyncIterator[tuple[Relay, str]]:
    """The relay `mailer run` would use: the configured one, else the embedded capture."""
    smtp = settings.smtp
    config = smtp.relay()
    capture = None
    if config is None:
        if not smtp.capture:
            raise ConfigError(
                "config: [smtp] url (MAILER_SMTP_URL): no relay configured; set one, or set"
                " [smtp] capture = true (MAILER_SMTP_CAPTURE) to write mail to"
                f" {smtp.capture_dir} instead"
            )
        capture = CaptureServer(smtp.capture_dir)
        await capture.start()
        config = SmtpRelay(
            host="127.0.0.1",
            port=capture.port,
            implicit_tls=False,
            starttls=False,
            username=None,
            password=None,
        )
    relay = Relay(
        config,
        pool_size=4,
        timeout=smtp.timeout,
        context=tls_context(smtp.ca_file),
        helo_name=smtp.helo_name,
    )
    try:
        yield (
            relay,
            (f"the embedded capture into {smtp.capture_dir}" if capture else config.display),
        )
    finally:
        await relay.close()
        if capture is not None:
            await capture.stop()


async def send_test(args: argparse.Namespace, settings: Settings) -> int:
    """Signed as the worker signs, from the same [dkim] settings."""
    signer = load_signer(settings)
    issue = _issue(args.file, settings)
    recipients = _recipients(args.to)
    renderer = templates(settings)
    async with _relay(settings) as (relay, where):
        sender = Sender(
            kind="test",
            composer=compose,
            signer=signer,
            relay=relay,
            return_path=settings.sender.return_path,
            metrics=Metrics(),
        )
        try:
            trial = prepare_trial(
                issue,
                renderer,
                recipients,
                locale=args.locale,
                public_url=settings.http.public_url,
            )
            results = await send_tests(
                trial,
                sender,
                recipients,
                public_url=settings.http.public_url,
                clock=lambda: datetime.now(UTC),
            )
        except InvalidJob as exc:
            raise MailerError(f"{args.file}: not a valid issue: {exc.reason}") from None
        except ValueError as exc:
            raise ConfigError(f"--to: {exc}") from None
    failed = 0
    for result in results:
        if isinstance(result.outcome, Sent):
            said = f"sent ({result.outcome.reply})"
        else:
            failed += 1
            said = f"NOT sent: {result.outcome.reason}"
        print(f"{result.address} ({result.locale}): {said}")
    print(f"{len(results) - failed} of {len(results)} test message(s) sent via {where}")
    return 1 if failed else 0
