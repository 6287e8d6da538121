"""The few exceptions the rest of the program reasons about.

Library errors are translated into these at the adapter that calls the library.
"""


class MailerError(Exception):
    """Base of every error this program raises on purpose."""


class ConfigError(MailerError):
    """A setting is missing or invalid; the message names it."""


class InvalidJob(MailerError):
    """A job that can never succeed; it is parked with this reason.

    The reason is shown to operators, so it never contains an e-mail address.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporaryFailure(MailerError):
    """Worth retrying later: a 4xx reply, a dropped connection, a service down."""


class RelayUnavailable(TemporaryFailure):
    """No session with the relay: it cannot be reached, or refuses TLS or our credentials.
    Never the recipient's fault."""


class ShuttingDown(MailerError):
    """The process is stopping: work not yet begun goes back to its queue."""


class Withdrawn(MailerError):
    """Called off at the last moment, before the relay saw any of it."""
