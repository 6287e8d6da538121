"""A listener whose port is taken: one line naming host:port and the setting, exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

from tests.conftest import ROOT
from tests.support.processes import environment, mailer


def test_a_port_already_in_use_is_one_line_naming_it(config: dict[str, Any]) -> None:
    env = environment(config)
    assert mailer("migrate", env=env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["MAILER_HTTP_PORT"] = str(port)
        for command in ("web", "run"):
            result = subprocess.run(
                [sys.executable, "-m", "mailer", command],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            assert result.stderr.splitlines()[-1] == (
                f"mailer: [http] cannot listen on 127.0.0.1:{port}: the port is already in use"
                " (another mailer, or another program); choose another [http] host or port"
                " (MAILER_HTTP_PORT)"
            )
    env["MAILER_HTTP_HOST"] = "192.0.2.1"  # TEST-NET-1: not an address of this machine
    env["MAILER_HTTP_PORT"] = "0"
    result = mailer("web", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "mailer: [http] cannot listen on 192.0.2.1:0: that address is not one of this machine's"
    )


def test_the_admin_port_in_use_is_one_line_naming_it_too(config: dict[str, Any]) -> None:
    env = environment(config)
    assert mailer("migrate", env=env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env["MAILER_HTTP_PORT"] = "0"
        env["MAILER_ADMIN_PORT"] = str(port)
        result = mailer("web", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"mailer: [admin] cannot listen on 127.0.0.1:{port}: the port is already in use"
        " (another mailer, or another program); choose another [admin] host or port"
        " (MAILER_ADMIN_PORT)"
    )
