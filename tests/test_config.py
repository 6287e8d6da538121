from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.config import load_settings, parse_smtp_url
from mailer.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_file_loads_and_every_key_names_its_variable() -> None:
    settings, unknown = load_settings(ROOT / "config" / "mailer.toml", environ={})
    assert unknown == []
    assert settings.smtp.url is None  # the embedded capture by default
    assert settings.lists["lucid-news"].from_ == "Lucid News <news@lucid.example>"
    section = ""
    for line in (ROOT / "config" / "mailer.toml").read_text().splitlines():
        if heading := re.fullmatch(r"(?:# )?\[([\w.\"-]+)\]", line):
            section = heading[1]
        elif re.match(r"#? ?[a-z_0-9]+ = ", line) and "." not in section:  # tables: file only
            key = line.lstrip("# ").split(" ", 1)[0]
            assert f"MAILER_{section}_{key}".upper() in line, line


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    file = tmp_path / "m.toml"
    file.write_text("[smtp]\npool_size = 3\n[http]\nport = 9000\n")
    settings, unknown = load_settings(
        file,
        environ={
            "MAILER_SMTP_POOL_SIZE": "7",
            "MAILER_SENDER_FROM": "X <x@lucid.example>",
            "MAILER_SMTP_ULR": "typo",
            "MAILER_CONFIG": "ignored-when-a-path-is-given",
        },
    )
    assert settings.smtp.pool_size == 7
    assert settings.http.port == 9000
    assert settings.sender.from_ == "X <x@lucid.example>"
    assert unknown == ["MAILER_SMTP_ULR"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"MAILER_SMTP_POOL_SIZE": "many"},
            "config: [smtp] pool_size (MAILER_SMTP_POOL_SIZE): Input should be a valid integer",
        ),
        (
            {"MAILER_SMTP_URL": "smtp://relay.example:25?tls=none"},
            "config: [smtp] url (MAILER_SMTP_URL): tls=none is allowed only for a loopback relay",
        ),
        (
            {"MAILER_SMTP_URL": "http://relay.example"},
            "config: [smtp] url (MAILER_SMTP_URL): must start with smtp:// or smtps://",
        ),
        (
            {"MAILER_HTTP_PUBLIC_URL": "mail.lucid.example"},
            "config: [http] public_url (MAILER_HTTP_PUBLIC_URL): must be an absolute",
        ),
        (
            {"MAILER_DKIM_DOMAIN": "lucid.example"},
            "config: [dkim]: selector, key_file must be set together with the others",
        ),
        (
            {"MAILER_SENDER_DEFAULT_LOCALE": "de"},
            "config: [sender] default_locale (MAILER_SENDER_DEFAULT_LOCALE): "
            "Input should be 'pl' or 'en'",
        ),
        (
            {"MAILER_RETRY_MAX_DELAY": "1"},
            "config: [retry]: max_delay must not be below first_delay",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ROOT / "config" / "mailer.toml", environ=environ)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_unknown_keys_in_the_file_are_errors(tmp_path: Path) -> None:
    file = tmp_path / "m.toml"
    file.write_text("[smtp]\npool_sise = 3\n")
    with pytest.raises(
        ConfigError, match=r"\[smtp\] pool_sise \(MAILER_SMTP_POOL_SISE\): is not a known setting"
    ):
        load_settings(file, environ={})


def test_a_missing_config_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"MAILER_CONFIG": str(tmp_path / "nope.toml")})


def test_the_secret_key_is_required_and_may_come_from_a_file(tmp_path: Path) -> None:
    settings, _ = load_settings(environ={"MAILER_CONFIG": str(ROOT / "config" / "mailer.toml")})
    with pytest.raises(
        ConfigError, match=r"\[security\] secret_key \(MAILER_SECURITY_SECRET_KEY\) is required"
    ):
        settings.security.key()
    secret = tmp_path / "secret"
    secret.write_text("s" * 40 + "\n")
    secret.chmod(0o600)
    settings, _ = load_settings(
        environ={
            "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
            "MAILER_SECURITY_SECRET_KEY_FILE": str(secret),
        }
    )
    assert settings.security.key() == b"s" * 40
    settings, _ = load_settings(
        environ={
            "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
            "MAILER_SECURITY_SECRET_KEY": "short",
        }
    )
    with pytest.raises(ConfigError, match="at least 32 characters"):
        settings.security.key()


@pytest.mark.parametrize(
    ("url", "host", "port", "implicit", "starttls", "user"),
    [
        ("smtp://relay.example", "relay.example", 25, False, True, None),
        ("smtp://relay.example:587", "relay.example", 587, False, True, None),
        ("smtps://u%40x:p%3Ass@relay.example", "relay.example", 465, True, False, "u@x"),
        ("smtp://127.0.0.1:2525?tls=none", "127.0.0.1", 2525, False, False, None),
        ("smtp://[::1]:2525?tls=none", "::1", 2525, False, False, None),
        ("smtp://localhost?tls=none", "localhost", 25, False, False, None),
    ],
)
def test_smtp_urls(
    url: str, host: str, port: int, implicit: bool, starttls: bool, user: str | None
) -> None:
    relay = parse_smtp_url(url, password=None)
    assert (relay.host, relay.port, relay.implicit_tls, relay.starttls, relay.username) == (
        host,
        port,
        implicit,
        starttls,
        user,
    )


def test_smtp_password_file_wins(tmp_path: Path) -> None:
    relay = parse_smtp_url("smtps://user:old@relay.example", password="from-file")
    assert relay.password is not None and relay.password.get_secret_value() == "from-file"


def test_the_command_prints_one_line_and_exits_2_on_bad_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "migrate"],
        env={
            "MAILER_CONFIG": str(ROOT / "config" / "mailer.toml"),
            "MAILER_BROKER_PREFETCH": "0",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mailer: config: [broker] prefetch (MAILER_BROKER_PREFETCH): Input should be greater than "
        "or equal to 1"
    ]
    assert "Traceback" not in result.stderr
