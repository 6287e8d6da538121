"""One clear line when a listener cannot open its socket (the port taken, the address not
on this machine, a port below 1024 without the right to it), naming host:port and the
setting to change, instead of a traceback from the event loop."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from mailer.errors import ConfigError

_REASONS = {
    errno.EADDRINUSE: "the port is already in use (another mailer, or another program)",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextmanager
def listening(section: str, host: str, port: int) -> Iterator[None]:
    """Around a listener's start: an OSError binding `host:port` becomes a ConfigError
    naming the section whose host and port to change (e.g. "http")."""
    try:
        yield
    except OSError as exc:
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        variable = f"MAILER_{section.upper()}_PORT"
        raise ConfigError(
            f"[{section}] cannot listen on {endpoint(host, port)}: {reason};"
            f" choose another [{section}] host or port ({variable})"
        ) from None
