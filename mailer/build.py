"""What this build of mailer is, for operators: its version, as installed."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("mailer")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "unknown"
PYTHON = platform.python_version()
