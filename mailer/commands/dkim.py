"""`mailer dkim keygen`: a DKIM key made and written where only its owner reads it, and
the DNS TXT record that publishes it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mailer.commands.running import Subcommands, runs
from mailer.config import Settings
from mailer.core.signing import KEY_TYPES, generate_key, txt_strings
from mailer.errors import ConfigError, MailerError


def add_parser(commands: Subcommands) -> None:
    dkim = commands.add_parser("dkim", help="DKIM keys")
    actions = dkim.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    made = actions.add_parser("keygen", help="make a key and print its DNS TXT record")
    made.add_argument(
        "--type", choices=KEY_TYPES, default="rsa", help="rsa (2048 bits, default) or ed25519"
    )
    made.add_argument("--domain", help="signing domain (default: [dkim] domain)")
    made.add_argument("--selector", help="selector (default: [dkim] selector)")
    made.add_argument(
        "--out", type=Path, help="where to write the PEM key (default: [dkim] key_file)"
    )
    made.add_argument(
        "--force", action="store_true", help="overwrite an existing file (with --out only)"
    )
    runs(made, keygen)


def keygen(args: argparse.Namespace, settings: Settings) -> int:
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
