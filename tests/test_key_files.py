"""Key and secret files: written 0600 by keygen, refused at start when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mailer.assembly.prepared import prepare
from mailer.config import build_settings, load_settings
from mailer.core.signing import generate_key, load_key
from mailer.errors import ConfigError
from tests.conftest import ROOT, SECRET
from tests.support.processes import mailer


def settings_with_key(key_file: Path, **security: Any) -> dict[str, Any]:
    return {
        "dkim": {"domain": "lucid.example", "selector": "s", "key_file": str(key_file)},
        "security": security or {"secret_key": SECRET},
        "worker": {"templates_dir": str(ROOT / "templates")},
    }


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(generate_key("ed25519", domain="lucid.example", selector="s").pem)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_dkim_key_others_can_read_is_refused_at_start(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, mode)
    with pytest.raises(ConfigError) as refused:
        prepare(build_settings(settings_with_key(path)))
    assert str(refused.value) == (
        f"config: [dkim] key_file: {path} is open to other users (mode {mode:04o}); "
        f"run: chmod 600 {path}"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_dkim_key_only_its_owner_can_read_is_used(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, mode)
    prepared = prepare(build_settings(settings_with_key(path)))
    assert prepared.signer.sign(b"From: a@lucid.example\r\n\r\nx\r\n", 1).startswith(
        b"DKIM-Signature:"
    )


def test_a_secret_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)
    settings, _ = load_settings(
        environ={
            "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
            "MAILER_SECURITY_SECRET_KEY_FILE": str(secret),
        }
    )
    with pytest.raises(ConfigError, match=rf"chmod 600 {secret}$") as refused:
        settings.security.key()
    assert "[security] secret_key_file" in str(refused.value)
    secret.chmod(0o600)
    assert settings.security.key() == SECRET.encode()


def test_the_worker_will_not_start_with_a_readable_key(tmp_path: Path) -> None:
    """Before any connection: exit status 2 and one line naming the file and the fix."""
    path = key_file(tmp_path, 0o644)
    env = {
        "PATH": os.environ["PATH"],
        "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
        "MAILER_SECURITY_SECRET_KEY": SECRET,
        "MAILER_DKIM_DOMAIN": "lucid.example",
        "MAILER_DKIM_SELECTOR": "s",
        "MAILER_DKIM_KEY_FILE": str(path),
        "MAILER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    result = mailer("worker", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mailer: config: [dkim] key_file: {path} is open to other users (mode 0644); "
        f"run: chmod 600 {path}"
    )


def keygen(out: Path, *extra: str) -> tuple[int, str]:
    env = {"PATH": os.environ["PATH"], "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml")}
    result = mailer(
        "dkim",
        "keygen",
        "--domain",
        "lucid.example",
        "--selector",
        "s",
        "--out",
        str(out),
        *extra,
        env=env,
    )
    return result.returncode, result.stderr


def test_keygen_force_over_a_0644_file_leaves_the_new_key_0600(tmp_path: Path) -> None:
    out = tmp_path / "dkim.pem"
    out.write_bytes(b"an old key, readable by everyone\n")
    out.chmod(0o644)
    code, stderr = keygen(out, "--force")
    assert code == 0, stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    load_key(out.read_bytes(), domain="lucid.example", selector="s")
    assert [p.name for p in tmp_path.iterdir()] == ["dkim.pem"]  # no temporary left behind
