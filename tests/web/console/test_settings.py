"""[admin]: the console's listener, its defaults, the environment, and one clear error."""

from __future__ import annotations

import pytest

from mailer.config import build_settings, load_settings
from mailer.errors import ConfigError
from tests.conftest import ROOT


def test_the_console_listens_on_loopback_8081_by_default() -> None:
    settings, unknown = load_settings(ROOT / "config" / "mailer.toml", environ={})
    assert (settings.admin.host, settings.admin.port) == ("127.0.0.1", 8081)
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert settings.admin.origin is None
    assert unknown == []


def test_the_environment_sets_the_console() -> None:
    settings, unknown = load_settings(
        ROOT / "config" / "mailer.toml",
        environ={
            "MAILER_ADMIN_PORT": "9091",
            "MAILER_ADMIN_ORIGIN": "https://console.lucid.example/",
            "MAILER_ADMIN_LOGIN_ATTEMPTS": "10",
        },
    )
    assert settings.admin.port == 9091
    assert settings.admin.origin == "https://console.lucid.example"
    assert settings.admin.login_attempts == 10
    assert unknown == []


@pytest.mark.parametrize(
    ("admin", "message"),
    [
        ({"port": 70000}, "[admin] port"),
        ({"origin": "console.lucid.example"}, "[admin] origin"),
        ({"origin": "https://console.lucid.example/path"}, "[admin] origin"),
        ({"session_hours": 0}, "[admin] session_hours"),
    ],
)
def test_a_bad_setting_is_named(admin: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"admin": admin})
    assert message in str(caught.value)
