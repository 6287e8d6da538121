"""`mailer dkim keygen` in its bare form: the key [dkim] names, never an existing one replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mailer.core.signing import load_key
from tests.conftest import ROOT
from tests.support.processes import mailer


def settings(key_file: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_DKIM_DOMAIN": "lucid.example",
        "MAILER_DKIM_SELECTOR": "mail2027",
        "MAILER_DKIM_KEY_FILE": str(key_file),
    }


def test_keygen_with_no_options_makes_the_configured_key_once(tmp_path: Path) -> None:
    key_file = tmp_path / "dkim" / "mail2027.pem"
    env = settings(key_file)
    made = mailer("dkim", "keygen", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stderr == f"wrote rsa-sha256 key to {key_file}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_key(key_file.read_bytes(), domain="lucid.example", selector="mail2027")
    record = made.stdout.strip()
    assert record.startswith('mail2027._domainkey.lucid.example. IN TXT ( "v=DKIM1; k=rsa; p=')
    strings = record.split("( ", 1)[1].rstrip(" )").split('" "')
    assert "".join(part.strip('"') for part in strings) == key.dns_record()
    first = key_file.read_bytes()

    again = mailer("dkim", "keygen", env=env)
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == (
        f"mailer: dkim keygen: {key_file} exists: not overwritten (it is [dkim] key_file;"
        " to rotate, give a new --selector and --out)\n"
    )
    forced = mailer("dkim", "keygen", "--force", env=env)
    assert forced.returncode == 2
    assert forced.stderr == (
        "mailer: dkim keygen: --force needs --out: [dkim] key_file is never overwritten\n"
    )
    assert key_file.read_bytes() == first  # the key in use is untouched
    assert [p.name for p in key_file.parent.iterdir()] == ["mail2027.pem"]  # no stray file

    other = tmp_path / "dkim" / "mail2028.pem"
    rotated = mailer("dkim", "keygen", "--selector", "mail2028", "--out", str(other), env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("mail2028._domainkey.lucid.example. IN TXT (")
    assert mailer("dkim", "keygen", "--out", str(other), env=env).returncode == 1
    replaced = mailer("dkim", "keygen", "--out", str(other), "--force", env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert key_file.read_bytes() == first


def test_keygen_without_a_key_file_to_write_says_which_setting(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml")}
    result = mailer("dkim", "keygen", "--domain", "lucid.example", "--selector", "s", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "mailer: dkim keygen: give --out (or set [dkim] key_file, MAILER_DKIM_KEY_FILE)\n"
    )
    assert list(tmp_path.iterdir()) == []
