"""What the settings alone decide, built and checked before any connection is made: the
templates, the DKIM keys, the addresses, the token keys, the retry tiers, the relay."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailer.config import Settings, SmtpRelay, read_private_file
from mailer.core.messages import Mailbox, parse_mailbox
from mailer.core.outcomes import delay_tiers
from mailer.core.rendering import Renderer
from mailer.core.signing import DkimKey, NoSigner, OpenSSLSigner, Signer, load_key
from mailer.core.tokens import TokenKeys, derive_key
from mailer.errors import ConfigError

log = logging.getLogger(__name__)


def retry_tiers(settings: Settings) -> tuple[float, ...]:
    retry = settings.retry
    return delay_tiers(retry.first_delay, retry.max_delay, retry.multiplier)


def load_signer(settings: Settings) -> Signer:
    dkim = settings.dkim
    if not dkim.enabled:
        log.warning("no [dkim] key configured: messages go out unsigned")
        return NoSigner()
    keys: list[DkimKey] = []
    pairs = [
        ("key_file", dkim.selector, dkim.key_file),
        ("ed25519_key_file", dkim.ed25519_selector, dkim.ed25519_key_file),
    ]
    for setting, selector, path in pairs:
        if path is None or selector is None or dkim.domain is None:
            continue
        pem = read_private_file(path, f"[dkim] {setting}")
        try:
            key = load_key(pem, domain=dkim.domain, selector=selector)
        except ValueError as exc:
            raise ConfigError(f"config: [dkim] {setting}: {path}: {exc}") from None
        if setting == "ed25519_key_file" and key.algorithm != "ed25519-sha256":
            raise ConfigError(f"config: [dkim] ed25519_key_file: {path} is not an Ed25519 key")
        keys.append(key)
    return OpenSSLSigner(keys)


def worker_relay(settings: Settings) -> SmtpRelay | None:
    """The relay the worker sends through; None: the embedded capture server, when
    `[smtp] capture` asks for it; else there is nowhere to send, a ConfigError."""
    smtp = settings.smtp
    relay = smtp.relay()
    if relay is not None:
        log.info("relay %s", relay.display)
        return relay
    if not smtp.capture:
        raise ConfigError(
            "config: [smtp] url (MAILER_SMTP_URL): no relay configured; set one, or set"
            " [smtp] capture = true (MAILER_SMTP_CAPTURE) to write mail to"
            f" {smtp.capture_dir} instead of delivering it"
        )
    return None


def _mailbox(text: str, setting: str) -> Mailbox:
    try:
        return parse_mailbox(text)
    except ValueError as exc:
        raise ConfigError(f"config: {setting}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Prepared:
    renderer: Renderer
    signer: Signer
    sender: Mailbox
    hash_key: bytes
    token_keys: TokenKeys
    tiers: tuple[float, ...]
    list_senders: dict[str, Mailbox]


def prepare(settings: Settings) -> Prepared:
    try:
        renderer = Renderer(settings.worker.templates_dir)
    except ValueError as exc:
        raise ConfigError(f"config: [worker] templates_dir: {exc}") from None
    missing = {"receipt", "newsletter", "confirm"} - renderer.names
    if missing:
        raise ConfigError(
            f"config: [worker] templates_dir: {settings.worker.templates_dir} has no "
            f"{', '.join(sorted(missing))} template"
        )
    security = settings.security
    return Prepared(
        renderer=renderer,
        signer=load_signer(settings),
        sender=_mailbox(settings.sender.from_, "[sender] from (MAILER_SENDER_FROM)"),
        hash_key=derive_key(security.address_secret(), "address"),
        token_keys=TokenKeys.from_secrets(security.key(), security.retired()),
        tiers=retry_tiers(settings),
        list_senders={
            slug: _mailbox(lst.from_, f"[lists.{slug}] from")
            for slug, lst in settings.lists.items()
        },
    )
