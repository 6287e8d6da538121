"""Bounce corpora: test data kept outside the repository, read in place, never copied in.

A set is looked for, in this order:
1. `$MAILER_CORPORA/bounces/<set>/`, when that variable names a folder;
2. `shared/corpora/bounces/<set>/` beside the clone: in its parent folder or the nearest
   ancestor that has one (CI lays out `../shared/` beside the clone);
3. for `flufl-bounce` only: the test messages of the flufl.bounce sdist, as `scripts/test`
   fetches it from PyPI (`pip download`) into `~/.cache/mailer/corpora/` (or
   `$XDG_CACHE_HOME/mailer/corpora/`). Its expected recipients are read from the same sdist:
   the `DETECTORS` table of its own `tests/test_detectors.py`, the table `expected.json` of
   the shared copy was made from (the two hold the same 116 entries).

`flufl_bounce()` and `sisimai()` return the set, or None where it is nowhere; `missing()`
makes that one skip line naming what is missing (a failure under CI=true).
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLUFL_VERSION = version("flufl.bounce")
FLUFL_SDIST = f"flufl_bounce-{FLUFL_VERSION}"


@dataclass(frozen=True)
class Expected:
    """What flufl.bounce's own tests expect of one file, for one of its detectors."""

    file: str
    detector: str
    recipients: tuple[str, ...]
    temporary: bool


@dataclass(frozen=True)
class FluflCorpus:
    messages: Path  # the *.txt files
    expected: tuple[Expected, ...]
    source: str  # where it was found, for messages


@dataclass(frozen=True)
class SisimaiCorpus:
    maildir: Path
    labels: dict[str, Any]
    source: str


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mailer" / "corpora"


def _beside(name: str) -> Path | None:
    """`bounces/<name>` under $MAILER_CORPORA, or under shared/corpora/ beside the clone."""
    chosen = os.environ.get("MAILER_CORPORA")
    if chosen:
        found = Path(chosen) / "bounces" / name
        return found if found.is_dir() else None
    for parent in ROOT.parents:
        found = parent / "shared" / "corpora" / "bounces" / name
        if found.is_dir():
            return found
    return None


def flufl_bounce() -> FluflCorpus | None:
    shared = _beside("flufl-bounce")
    if shared is not None and (shared / "expected.json").is_file():
        expected = tuple(
            Expected(e["file"], e["format"], tuple(e["recipients"]), e["temporary"])
            for e in json.loads((shared / "expected.json").read_text())
        )
        return FluflCorpus(shared / "messages", expected, str(shared))
    fetched = cache_dir() / FLUFL_SDIST / "tests"
    table = fetched / "test_detectors.py"
    if not table.is_file() or not (fetched / "data").is_dir():
        return None
    return FluflCorpus(fetched / "data", _detectors_table(table), f"the {FLUFL_SDIST} sdist")


def _detectors_table(path: Path) -> tuple[Expected, ...]:
    """flufl.bounce's `DETECTORS = [(detector, file, [addresses], temporary), ...]`, read as a
    literal (nothing of the sdist is run)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "DETECTORS" for target in node.targets
        ):
            rows = ast.literal_eval(node.value)
            return tuple(
                Expected(file, detector, tuple(a.decode() for a in addresses), temporary)
                for detector, file, addresses, temporary in rows
            )
    raise ValueError(f"{path} has no DETECTORS table")


def sisimai() -> SisimaiCorpus | None:
    shared = _beside("sisimai")
    if shared is None or not (shared / "labels.json").is_file():
        return None
    return SisimaiCorpus(
        shared / "maildir", json.loads((shared / "labels.json").read_text()), str(shared)
    )


FLUFL_MISSING = (
    f"the flufl.bounce {FLUFL_VERSION} test messages: neither shared/corpora/bounces/"
    f"flufl-bounce/ beside the clone nor {cache_dir() / FLUFL_SDIST} (./scripts/test fetches it)"
)
SISIMAI_MISSING = "the sisimai bounce corpus: shared/corpora/bounces/sisimai/ beside the clone"


def missing(what: str) -> NoReturn:
    """One line naming what is missing: a skip of the whole module, a failure under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"missing {what} (CI=true: not skipping)", pytrace=False)
    pytest.skip(f"missing {what}", allow_module_level=True)
