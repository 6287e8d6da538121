"""Settings: one typed object, built once at start from TOML and `MAILER_<SECTION>_<KEY>`.

Precedence: environment over file over defaults. A missing or invalid setting raises
`ConfigError` with one line naming it, both as `[section] key` and as its variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_origin
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailer.core.jobs import SLUG
from mailer.core.locales import DEFAULT_LOCALE, Locale
from mailer.errors import ConfigError


def _comma_list(value: object) -> object:
    """A list given as one string, "a, b", as an environment variable gives it."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _networks(value: list[str]) -> list[str]:
    for text in value:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    return value


# IP addresses or CIDR networks, as a list or one comma-separated string
Networks = Annotated[list[str], BeforeValidator(_comma_list), AfterValidator(_networks)]

DEFAULT_CONFIG_PATH = Path("config/mailer.toml")
ENV_PREFIX = "MAILER_"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BrokerSettings(_Section):
    """`url` names one node, or every node of a cluster: a TOML list, or in the environment
    a list separated by commas or spaces. Connections go to any live node and move on when
    it dies."""

    url: tuple[SecretStr, ...] = (SecretStr("amqp://guest:guest@127.0.0.1:5672/"),)
    prefetch: int = Field(32, ge=1, le=1000)
    publish_timeout: float = Field(10.0, gt=0)
    heartbeat: int = Field(30, ge=1, le=600)
    reconnect_delay: float = Field(1.0, gt=0, le=60)
    max_reconnect_delay: float = Field(30.0, gt=0, le=600)

    @field_validator("url", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in re.split(r"[\s,]+", value) if part]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("needs at least one amqp:// or amqps:// URL")
            for n, url in enumerate(value, 1):
                text = url.get_secret_value() if isinstance(url, SecretStr) else url
                if isinstance(text, str):
                    _check_amqp_url(text, n if len(value) > 1 else None)
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> BrokerSettings:
        if self.max_reconnect_delay < self.reconnect_delay:
            raise ValueError("max_reconnect_delay must not be below reconnect_delay")
        return self

    def urls(self) -> list[str]:
        return [url.get_secret_value() for url in self.url]


def _check_amqp_url(url: str, position: int | None) -> None:
    which = f"URL {position} " if position is not None else ""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(f"{which}must start with amqp:// or amqps://")
    if not parts.hostname:
        raise ValueError(f"{which}has no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{which}has an invalid port") from None


class DatabaseSettings(_Section):
    """`url` is a libpq URL; for failover it names every server, e.g.
    `postgresql://mailer@db1:5432,db2:5432/mailer?target_session_attrs=read-write`."""

    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/mailer")
    pool_size: int = Field(10, ge=2, le=200)

    @field_validator("url")
    @classmethod
    def _parse_url_early(cls, value: SecretStr) -> SecretStr:
        parse_database_url(value.get_secret_value())
        return value


SESSION_ATTRS = frozenset(
    {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}
)
_WRITABLE_ATTRS = frozenset({"read-write", "primary"})


def parse_database_url(url: str) -> tuple[list[tuple[str, int | None]], str]:
    """The (host, port) list and the database name of a libpq URL, as asyncpg reads it.

    Several hosts need `target_session_attrs=read-write` (or `primary`): without it a
    connection may land on a standby, where every write is refused.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must start with postgresql://")
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        raise ValueError("has a malformed query string") from None
    hostspec = parts.netloc.rpartition("@")[2]
    hosts: list[tuple[str, int | None]] = []
    for entry in hostspec.split(",") if hostspec else []:
        host, port = _host_and_port(entry)
        hosts.append((host, port))
    if not hosts and "host" not in query:
        raise ValueError("names no host")
    database = unquote(parts.path.lstrip("/")) or query.get("dbname") or query.get("database")
    if not database:
        raise ValueError("names no database (postgresql://user@host:port/DATABASE)")
    attrs = query.get("target_session_attrs", "any")
    if attrs not in SESSION_ATTRS:
        raise ValueError(f"target_session_attrs must be one of {', '.join(sorted(SESSION_ATTRS))}")
    if len(hosts) > 1 and attrs not in _WRITABLE_ATTRS:
        raise ValueError(
            "names several hosts: add ?target_session_attrs=read-write so that connections "
            "go to the primary"
        )
    return hosts, database


def _host_and_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = entry.partition(":")
    if not host:
        raise ValueError("has an empty host in its host list")
    if not port_text:
        return unquote(host), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"has an invalid port {port_text!r}")
    return unquote(host), int(port_text)


class SmtpRelay(BaseModel):
    """The parsed `[smtp] url`."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: SecretStr | None

    @property
    def display(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        tls = "" if self.implicit_tls or self.starttls else " (plain text)"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}{tls}"


class SmtpSettings(_Section):
    url: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    pool_size: int = Field(4, ge=1, le=100)
    timeout: float = Field(30.0, gt=0)
    helo_name: str | None = None
    capture: bool = False  # with no url: the embedded capture server, for development
    capture_dir: Path = Path("var/outbox")

    @field_validator("url")
    @classmethod
    def _parse_url_early(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_smtp_url(value.get_secret_value(), password=None)
        return value

    def relay(self) -> SmtpRelay | None:
        """The configured relay, or None for the embedded capture server."""
        if self.url is None:
            return None
        password = None
        if self.password_file is not None:
            password = _read_secret_file(self.password_file, "[smtp] password_file")
        return parse_smtp_url(self.url.get_secret_value(), password=password)


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_smtp_url(url: str, *, password: str | None) -> SmtpRelay:
    """`smtp://` needs STARTTLS, `smtps://` is implicit TLS, `?tls=none` only to loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("has no host")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - {"tls"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r} (only tls=none is known)")
    plain = query.get("tls") == "none"
    if "tls" in query and not plain:
        raise ValueError("tls may only be 'none'")
    if plain and parts.scheme == "smtps":
        raise ValueError("smtps:// cannot be combined with tls=none")
    if plain and not _is_loopback(parts.hostname):
        raise ValueError("tls=none is allowed only for a loopback relay")
    implicit = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if implicit else 25)
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    secret = password if password is not None else parts.password
    return SmtpRelay(
        host=parts.hostname,
        port=port,
        implicit_tls=implicit,
        starttls=not implicit and not plain,
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(secret)) if secret is not None else None,
    )


class DkimSettings(_Section):
    domain: str | None = None
    selector: str | None = None
    key_file: Path | None = None
    ed25519_selector: str | None = None
    ed25519_key_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> DkimSettings:
        primary = (self.domain, self.selector, self.key_file)
        if any(primary) and not all(primary):
            missing = [
                n for n, v in zip(("domain", "selector", "key_file"), primary, strict=True) if not v
            ]
            raise ValueError(f"{', '.join(missing)} must be set together with the others")
        second = (self.ed25519_selector, self.ed25519_key_file)
        if any(second) and not all(second):
            raise ValueError("ed25519_selector and ed25519_key_file must be set together")
        if any(second) and not self.domain:
            raise ValueError("ed25519_key_file needs domain, selector and key_file too")
        return self

    @property
    def enabled(self) -> bool:
        return self.key_file is not None


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    invalid_token_limit: int = Field(20, ge=1)
    limited_sources: int = Field(100_000, ge=1, le=10_000_000)
    trusted_proxies: Networks = []
    undo_minutes: int = Field(15, ge=1, le=24 * 60)
    read_timeout: float = Field(10.0, gt=0, le=300)
    max_line_size: int = Field(4096, ge=256, le=65536)
    max_field_size: int = Field(8190, ge=256, le=65536)
    max_headers: int = Field(64, ge=8, le=1024)
    max_connections: int = Field(512, ge=1, le=100_000)  # open at once, on each listener

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value.rstrip("/")

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(text, strict=False) for text in self.trusted_proxies]

    @property
    def public_origin(self) -> str:
        """`scheme://host[:port]` of public_url, as a browser writes it in `Origin`."""
        parts = urlsplit(self.public_url)
        default = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port not in (None, default) else ""
        return f"{parts.scheme}://{host}{port}"


class AdminSettings(_Section):
    """[admin]: the operators' console, its API and /metrics, on a listener of their own."""

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    # The console's address as browsers reach it; state-changing requests must come from
    # this origin, and https:// marks the session cookie Secure. Default: the request's Host.
    origin: str | None = None
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    login_attempts: int = Field(
        5, ge=1, le=1000
    )  # failed logins per 15 min, per account and per source
    refresh_seconds: int = Field(5, ge=1, le=3600)
    preview_processes: int = Field(1, ge=1, le=16)  # previews rendered at once, each a process
    preview_seconds: float = Field(10.0, gt=0, le=300)  # the longest one preview may render

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError("must be an origin: http(s)://host[:port]")
        return value.rstrip("/")


class SecuritySettings(_Section):
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    retired_secret_keys: list[SecretStr] = []
    address_hash_key: SecretStr | None = None

    @field_validator("retired_secret_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def retired(self) -> list[bytes]:
        """Secrets rotated out: links signed with them still work."""
        return [secret.get_secret_value().encode() for secret in self.retired_secret_keys]

    def address_secret(self) -> bytes:
        """What keys the address hashes; stays put when secret_key is rotated, if set."""
        if self.address_hash_key is not None:
            return self.address_hash_key.get_secret_value().encode()
        return self.key()

    def key(self) -> bytes:
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
        elif self.secret_key_file is not None:
            value = _read_secret_file(self.secret_key_file, "[security] secret_key_file")
        else:
            raise ConfigError(
                "config: [security] secret_key (MAILER_SECURITY_SECRET_KEY) is required "
                "(or secret_key_file); make one with: openssl rand -base64 32"
            )
        if len(value) < 32:
            raise ConfigError(
                "config: [security] secret_key (MAILER_SECURITY_SECRET_KEY) must be at least "
                "32 characters"
            )
        return value.encode()


class SenderSettings(_Section):
    from_: str = Field("LucidOffice <no-reply@lucid.example>", alias="from")
    default_locale: Locale = DEFAULT_LOCALE
    return_path: str | None = None


class _Backoff(_Section):
    """A section whose retries wait from `first_delay` up to `max_delay` (each sets its own
    defaults and bounds)."""

    first_delay: float
    max_delay: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_delay < self.first_delay:
            raise ValueError("max_delay must not be below first_delay")
        return self


class RetrySettings(_Backoff):
    first_delay: float = Field(30.0, gt=0, le=3600)
    max_delay: float = Field(3600.0, gt=0)
    multiplier: float = Field(4.0, ge=1)
    give_up_after: float = Field(172800.0, gt=0)


class WorkerSettings(_Section):
    drain_timeout: float = Field(30.0, gt=0)
    lease: float = Field(120.0, gt=0)
    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=0)
    templates_dir: Path = Path("templates")


class DomainLimit(_Section):
    rate: float = Field(0.0, ge=0)
    concurrency: int | None = Field(None, ge=1)


class NewsletterSettings(_Section):
    chunk_size: int = Field(200, ge=1, le=5000)
    pool_size: int = Field(4, ge=1, le=100)
    rate: float = Field(0.0, ge=0)
    default_domain_rate: float = Field(10.0, ge=0)
    poll_interval: float = Field(1.0, gt=0, le=60)
    confirm_days: int = Field(14, ge=1, le=365)
    domains: dict[str, DomainLimit] = {}

    @field_validator("domains")
    @classmethod
    def _lowercase(cls, value: dict[str, DomainLimit]) -> dict[str, DomainLimit]:
        return {domain.lower(): limit for domain, limit in value.items()}


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ListSettings(_Section):
    name: str
    from_: str = Field(alias="from")
    default_locale: Locale = DEFAULT_LOCALE


class BouncesSettings(_Section):
    """Return paths and the inbound bounce receiver. Without `domain` (no [bounces] section)
    envelope senders stay as they were ([sender] return_path, else each message's From)
    and no receiver runs."""

    domain: str | None = None
    listen: str = "127.0.0.1:2525"
    max_age_days: int = Field(30, ge=1, le=365)
    max_report_bytes: int = Field(1024 * 1024, ge=16 * 1024, le=64 * 1024 * 1024)
    rate: float = Field(1.0, gt=0)
    burst: int = Field(30, ge=1)
    retention_days: int = Field(60, ge=1, le=3650)
    soft_threshold: int = Field(5, ge=1)
    soft_window_days: int = Field(30, ge=1, le=3650)
    soft_expire_days: int = Field(90, ge=1, le=3650)
    complaint_alert_rate: float = Field(0.001, gt=0, le=1)
    feedback_sender: str = Field("mailer", pattern=r"^[A-Za-z0-9._-]{1,40}$")
    feedback_address: str | None = Field("fbl", pattern=r"^[a-z0-9._-]{1,40}$")
    max_connections: int = Field(100, ge=1, le=100_000)
    max_session_seconds: float = Field(300, ge=1, le=86_400)
    classify_timeout: float = Field(5, gt=0, le=600)
    classify_processes: int = Field(1, ge=1, le=16)

    @field_validator("domain")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower().rstrip(".")
        if not re.fullmatch(r"(?=.{1,200}$)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}", value):
            raise ValueError("must be a domain name such as bounces.lucid.example")
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        listen_address(value)
        return value


class EventsSettings(_Section):
    """Events back to the portal (docs/events.md): the outbox relay in every worker."""

    retention_days: float = Field(7, gt=0, le=3650)  # published events kept for a replay
    batch: int = Field(500, ge=1, le=10_000)  # events sequenced and published at a time
    poll_interval: float = Field(0.1, gt=0, le=10)  # the leader looks for new events
    takeover_interval: float = Field(1.0, gt=0, le=60)  # the others try to take over


def listen_address(value: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port`; port 0: any free port) → (host, port); ValueError when it
    is not one."""
    host, _, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("must be host:port, e.g. 127.0.0.1:2525")
    return host, int(port)


class WebhooksSettings(_Backoff):
    """[webhooks]: delivering an account's events to its HTTPS endpoints. `allow` names the
    networks a webhook may reach although they are not global (loopback, private, …);
    `disable_after` is how long an endpoint may fail without one success before it is
    disabled (retries go on that long at least)."""

    allow: Networks = []
    batch_size: int = Field(100, ge=1, le=1000)  # events per request, for new endpoints
    timeout: float = Field(15.0, gt=0, le=120)
    first_delay: float = Field(5.0, gt=0, le=3600)
    max_delay: float = Field(3600.0, gt=0, le=86_400)
    disable_after: float = Field(72 * 3600.0, gt=0)
    poll_interval: float = Field(0.5, gt=0, le=60)
    concurrency: int = Field(64, ge=1, le=10_000)  # endpoints one process serves at once
    rotation_hours: float = Field(24.0, ge=0, le=24 * 30)  # the old secret signs that long
    ca_file: Path | None = None


class Settings(_Section):
    broker: BrokerSettings = BrokerSettings()
    database: DatabaseSettings = DatabaseSettings()
    smtp: SmtpSettings = SmtpSettings()
    dkim: DkimSettings = DkimSettings()
    http: HttpSettings = HttpSettings()
    admin: AdminSettings = AdminSettings()
    security: SecuritySettings = SecuritySettings()
    sender: SenderSettings = SenderSettings()
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    newsletter: NewsletterSettings = NewsletterSettings()
    log: LogSettings = LogSettings()
    bounces: BouncesSettings = BouncesSettings()
    events: EventsSettings = EventsSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    lists: dict[str, ListSettings] = {}

    @field_validator("lists")
    @classmethod
    def _slugs(cls, value: dict[str, ListSettings]) -> dict[str, ListSettings]:
        for slug in value:
            if not SLUG.fullmatch(slug):
                raise ValueError(f"list slug {slug!r} must be lowercase letters, digits and '-'")
        return value


_ENV_SECTIONS = [name for name in Settings.model_fields if name != "lists"]


def _section_model(section: str) -> type[BaseModel]:
    annotation = Settings.model_fields[section].annotation
    assert isinstance(annotation, type)
    return annotation


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Settings from the environment, and the MAILER_ names that matched nothing."""
    known: dict[str, tuple[str, str]] = {}
    for section in _ENV_SECTIONS:
        for key, field in _section_model(section).model_fields.items():
            if get_origin(field.annotation) is dict:
                continue  # tables come from the file only
            name = field.alias or key
            known[_env_name(section, name)] = (section, name)
    found: dict[str, dict[str, str]] = {}
    unknown = []
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == "MAILER_CONFIG":
            continue
        if var in known:
            section, key = known[var]
            found.setdefault(section, {})[key] = value
        else:
            unknown.append(var)
    return found, sorted(unknown)


def _describe(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return "config"
    if parts[0] == "lists" and len(parts) >= 2:
        return f"[lists.{parts[1]}]" + (f" {'.'.join(parts[2:])}" if len(parts) > 2 else "")
    if len(parts) == 1:
        return f"[{parts[0]}]"
    return f"[{parts[0]}] {'.'.join(parts[1:])} ({_env_name(parts[0], parts[1])})"


def read_private_file(path: Path, setting: str) -> bytes:
    """A key or secret file's bytes, refused when anyone but its owner may read or write it.

    The mode is checked on the open file, so the file read is the file checked."""
    try:
        with path.open("rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"config: {setting}: {path} is open to other users (mode {mode:04o}); "
                    f"run: chmod 600 {path}"
                )
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"config: {setting}: cannot read {path}: {exc.strerror}") from None


def _read_secret_file(path: Path, setting: str) -> str:
    try:
        return read_private_file(path, setting).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"config: {setting}: {path} is not UTF-8 text") from None


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, list[str]]:
    """Read the file and the environment; return the settings and unknown MAILER_ variables."""
    env = os.environ if environ is None else environ
    explicit = path is not None or "MAILER_CONFIG" in env
    config_path = path or Path(env.get("MAILER_CONFIG", str(DEFAULT_CONFIG_PATH)))
    data: dict[str, Any] = {}
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config: {config_path} is not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"config: MAILER_CONFIG file {config_path} does not exist")
    overrides, unknown = _env_overrides(env)
    for section, values in overrides.items():
        existing = data.get(section, {})
        if not isinstance(existing, dict):
            raise ConfigError(f"config: [{section}] must be a table")
        data[section] = {**existing, **values}
    return build_settings(data), unknown


def build_settings(data: Mapping[str, Any]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a known setting"
        raise ConfigError(f"config: {_describe(error['loc'])}: {message}") from None
