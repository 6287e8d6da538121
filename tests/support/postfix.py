"""A private Postfix (Debian's package) for tests: its own config_directory, queue_directory
and data_directory in a scratch folder, one smtpd on a free loopback port, and mail routed
by transport_maps to the test's own servers only. Never the machine's /etc/postfix or port 25.

The master runs as root (Postfix's daemons then drop to the `postfix` user), so these tests
need root, as scripts/test and CI have.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
DAEMONS = Path("/usr/lib/postfix/sbin")

# name type private unpriv chroot wakeup maxproc command: nothing chrooted, nothing listening
# anywhere but the one smtpd on loopback.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def available() -> bool:
    return os.geteuid() == 0 and Path(POSTFIX).exists() and (DAEMONS / "master").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PrivatePostfix:
    """`routes`: destination domain → `host:port` it is relayed to (transport_maps)."""

    routes: Mapping[str, str]
    hostname: str = "mx.postfix.test"
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mailer-postfix-")))

    @property
    def config_directory(self) -> Path:
        return self.root / "etc"

    def _main_cf(self) -> str:
        transports = ", ".join(
            f"{domain}=smtp:[{target.rpartition(':')[0]}]:{target.rpartition(':')[2]}"
            for domain, target in self.routes.items()
        )
        return "\n".join(
            [
                "compatibility_level = 3.6",
                f"queue_directory = {self.root / 'spool'}",
                f"data_directory = {self.root / 'data'}",
                "command_directory = /usr/sbin",
                f"daemon_directory = {DAEMONS}",
                "shlib_directory = /usr/lib/postfix",
                "meta_directory = /etc/postfix",
                "mail_owner = postfix",
                "setgid_group = postdrop",
                f"maillog_file = {self.root / 'maillog'}",
                f"maillog_file_prefixes = {self.root}",
                f"myhostname = {self.hostname}",
                "mydomain = postfix.test",
                "myorigin = $myhostname",
                "mydestination =",
                "inet_interfaces = 127.0.0.1",
                "inet_protocols = ipv4",
                "mynetworks = 127.0.0.0/8",
                f"relay_domains = {', '.join(self.routes)}",
                f"transport_maps = inline:{{ {transports} }}",
                "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination",
                "smtp_dns_support_level = disabled",
                "smtp_host_lookup = native",
                "smtpd_peername_lookup = no",
                "smtp_tls_security_level = none",
                "smtpd_tls_security_level = none",
                "biff = no",
                "alias_maps =",
                "alias_database =",
                "local_recipient_maps =",
                "queue_run_delay = 1s",
                "minimal_backoff_time = 1s",
                "maximal_backoff_time = 2s",
                "delay_warning_time = 0",
                "smtp_connect_timeout = 5s",
                "",
            ]
        )

    def start(self) -> None:
        self.root.chmod(0o755)
        self.config_directory.mkdir()
        (self.config_directory / "main.cf").write_text(self._main_cf())
        (self.config_directory / "master.cf").write_text(MASTER_CF.format(port=self.port))
        for sub in ("spool", "data"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", "postfix")
        self._postfix("check")
        self._postfix("start")
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postfix did not listen: {self.log()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._postfix("stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"

    def _postfix(self, command: str) -> None:
        subprocess.run(
            [POSTFIX, "-c", str(self.config_directory), command],
            check=True,
            capture_output=True,
            timeout=60,
        )
