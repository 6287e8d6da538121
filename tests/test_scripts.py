"""scripts/lib.sh as a developer's shell runs it, against the real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ADMIN_DSN, ROOT


def lib(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", "-c", f"source scripts/lib.sh; {script}"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_configured_database_url_that_fails_stops_with_one_line(tmp_path: Path) -> None:
    """No quiet switch to a generated role: exit 1, the setting and the error named, no
    role or URL file made, and the URL's password never printed."""
    url = "postgresql://mailer:hunter2-secret@127.0.0.1:1/mailer"
    result = lib("ensure_database_url; echo reached", tmp_path, MAILER_DATABASE_URL=url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reached" not in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert "MAILER_DATABASE_URL: cannot connect: " in line
    assert "hunter2-secret" not in result.stderr
    assert not (tmp_path / "mailer" / "database.url").exists()


def test_a_configured_database_url_that_works_is_kept(tmp_path: Path) -> None:
    url = ADMIN_DSN.rsplit("/", 1)[0] + "/mailer_not_created_yet"
    result = lib(
        'ensure_database_url; echo "url=$MAILER_DATABASE_URL"', tmp_path, MAILER_DATABASE_URL=url
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"url={url}"
    assert result.stderr == ""
