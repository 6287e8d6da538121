# Shared by scripts/run and scripts/test: make a Debian machine ready for mailer.
# Installs only what is missing; servers it installs itself listen on loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STATE="${XDG_STATE_HOME:-$HOME/.local/state}/mailer"
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {  # port, what, seconds
  local waited=0
  until port_open "$1"; do
    sleep 1; waited=$((waited + 1))
    if [ "$waited" -ge "$3" ]; then say "$2 did not start listening on port $1"; return 1; fi
  done
}

apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_python() {
  if ! command -v python3 >/dev/null \
     || ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    apt_install python3 python3-venv python3-pip
  fi
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { say "mailer needs Python 3.11 or newer; this is $(python3 --version)"; exit 1; }
  # CVE-2024-6923 (fixed in 3.11.10, 3.12.5, 3.13.0): the email package's folding turns an
  # encoded-word holding CR LF into real header lines. mailer never uses that folding.
  if python3 -c 'import sys; v = sys.version_info[:3]; sys.exit(not (v < (3, 11, 10) or (3, 12) <= v < (3, 12, 5)))'; then
    say "$(python3 --version) has known header-injection bugs in its email package (CVE-2024-6923); mailer writes and encodes every header itself, so it is not affected"
  fi
}

ensure_postgres() {
  port_open 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql   # Debian's cluster listens on localhost only
  fi
  say "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || "${SUDO[@]}" pg_ctlcluster "$version" main start
  wait_for_port 5432 PostgreSQL 60
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  if ! command -v rabbitmq-server >/dev/null; then
    # Loopback only: AMQP, the Erlang distribution port and epmd.
    "${SUDO[@]}" mkdir -p /etc/rabbitmq
    printf 'NODE_IP_ADDRESS=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n' \
      | "${SUDO[@]}" tee /etc/rabbitmq/rabbitmq-env.conf >/dev/null
    apt_install rabbitmq-server
  fi
  if ! port_open 5672; then
    say "starting RabbitMQ"
    "${SUDO[@]}" rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_for_port 5672 RabbitMQ 120
  fi
}

ensure_venv() {  # extra, e.g. "[dev]"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.installed$1"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
    say "installing mailer$1 and its pinned dependencies"
    "$VENV/bin/pip" install -q --disable-pip-version-check -c "$ROOT/constraints.txt" -e "$ROOT$1"
    touch "$stamp"
  fi
}

# The flufl.bounce test messages for the corpus tests (tests/support/corpora.py), where no
# shared/corpora/bounces/flufl-bounce/ lies beside the clone: the sdist of the pinned
# flufl.bounce from PyPI, unpacked once into a cache outside the repository.
ensure_bounce_corpus() {
  local parent=$ROOT version cache
  [ -n "${MAILER_CORPORA:-}" ] && [ -d "$MAILER_CORPORA/bounces/flufl-bounce" ] && return 0
  while [ "$parent" != / ]; do
    parent=$(dirname "$parent")
    [ -d "$parent/shared/corpora/bounces/flufl-bounce" ] && return 0
  done
  version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("flufl.bounce"))')
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/mailer/corpora"
  [ -f "$cache/flufl_bounce-$version/tests/test_detectors.py" ] && return 0
  say "fetching the test messages of flufl.bounce $version (its sdist, from PyPI) into $cache"
  local download
  download=$(mktemp -d)
  if "$VENV/bin/pip" download -q --disable-pip-version-check --no-binary :all: --no-deps \
       -d "$download" "flufl.bounce==$version" 2>/dev/null; then
    mkdir -p "$download/unpacked" "$cache"
    tar -xzf "$download"/*.tar.gz -C "$download/unpacked"
    rm -rf "$cache/flufl_bounce-$version"
    mkdir "$cache/flufl_bounce-$version"
    mv "$download"/unpacked/*/tests "$download"/unpacked/*/LICENSE "$cache/flufl_bounce-$version/"
  else
    say "could not fetch flufl.bounce $version: the corpus tests will say what is missing"
  fi
  rm -rf "$download"
}

# Whether a database URL logs in; prints why not on standard error. The URL travels in the
# environment, never on a command line (`ps` shows those to every user).
database_url_works() {  # url
  DATABASE_URL_TO_TRY="$1" "$VENV/bin/python" - <<'PY'
import asyncio, os, sys, asyncpg
async def main(url):
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        return 0  # the role works; `mailer migrate` creates the database
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    await conn.close()
    return 0
sys.exit(asyncio.run(main(os.environ["DATABASE_URL_TO_TRY"])))
PY
}

# The database: MAILER_DATABASE_URL when it is set (and it must work: no quiet fallback);
# when it is not, PostgreSQL's default local login, or else, on a fresh Debian machine where
# TCP logins need a password, a local role `mailer` with a generated password.
ensure_database_url() {
  local why
  if [ -n "${MAILER_DATABASE_URL:-}" ]; then
    if ! why=$(database_url_works "$MAILER_DATABASE_URL" 2>&1); then
      say "MAILER_DATABASE_URL: cannot connect: ${why:-unknown error}"
      exit 1
    fi
    export MAILER_DATABASE_URL
    return 0
  fi
  local default="postgresql://postgres@127.0.0.1:5432/mailer"
  if database_url_works "$default" 2>/dev/null; then
    export MAILER_DATABASE_URL="$default"
    return 0
  fi
  mkdir -p "$STATE" && chmod 700 "$STATE"
  if [ ! -f "$STATE/database.url" ]; then
    say "creating a local PostgreSQL role for mailer"
    local password
    password=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
    # The password goes to psql on its standard input, not as an argument.
    "${SUDO[@]}" runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<SQL
DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailer') THEN CREATE ROLE mailer LOGIN CREATEDB; END IF; END \$\$;
ALTER ROLE mailer PASSWORD '$password';
SQL
    (umask 077; echo "postgresql://mailer:$password@127.0.0.1:5432/mailer" > "$STATE/database.url")
  fi
  say "MAILER_DATABASE_URL is not set and $default does not log in: using the local role mailer (its URL is in $STATE/database.url)"
  MAILER_DATABASE_URL=$(cat "$STATE/database.url")
  export MAILER_DATABASE_URL
}

# The settings of this machine's local setup, for `mailer run` and for commands beside it:
# a secret key and a development DKIM key made once, outside the repository.
local_settings() {
  ensure_database_url
  mkdir -p "$STATE" && chmod 700 "$STATE"
  if [ -z "${MAILER_SECURITY_SECRET_KEY:-}${MAILER_SECURITY_SECRET_KEY_FILE:-}" ]; then
    [ -f "$STATE/secret_key" ] || (umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))' > "$STATE/secret_key")
    export MAILER_SECURITY_SECRET_KEY_FILE="$STATE/secret_key"
  fi
  if [ -z "${MAILER_DKIM_KEY_FILE:-}" ]; then
    if [ ! -f "$STATE/dkim-dev.pem" ]; then
      say "making a development DKIM key (publish its record before using it for real mail)"
      "$VENV/bin/mailer" dkim keygen --domain lucid.example --selector dev \
        --out "$STATE/dkim-dev.pem" > "$STATE/dkim-dev.txt"
    fi
    export MAILER_DKIM_DOMAIN=lucid.example MAILER_DKIM_SELECTOR=dev \
      MAILER_DKIM_KEY_FILE="$STATE/dkim-dev.pem"
  fi
}
