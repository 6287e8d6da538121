"""The job formats as documented: every job in docs/jobs.md and examples/ is one `mailer
enqueue` accepts, and every command the README and docs show parses as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from mailer.cli import parser
from mailer.commands.checks import check_job
from mailer.config import build_settings
from mailer.core.jobs import NewsletterJob
from tests.conftest import ROOT

DOCS = ROOT / "docs" / "jobs.md"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(path: Path, language: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(path.read_text()) if kind == language]


def documented_jobs() -> list[tuple[str, bytes]]:
    jobs = [(f"docs/jobs.md #{n}", body.encode()) for n, body in enumerate(blocks(DOCS, "json"))]
    jobs += [
        (f"examples/{p.name}", p.read_bytes()) for p in sorted((ROOT / "examples").glob("*.json"))
    ]
    return jobs


@pytest.mark.parametrize(
    ("where", "body"), documented_jobs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_documented_job_is_valid(where: str, body: bytes, tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "security": {"secret_key": "x" * 40},
        "worker": {"templates_dir": str(ROOT / "templates")},
        "lists": {
            "lucid-news": {
                "name": "Lucid News",
                "from": "Lucid News <news@lucid.example>",
                "default_locale": "pl",
            }
        },
    }
    job = check_job(body, build_settings(config), source=where)
    assert json.loads(body)["kind"] == job.kind


def test_the_docs_show_every_kind_and_both_localized_shapes() -> None:
    kinds = [json.loads(body)["kind"] for body in blocks(DOCS, "json")]
    assert {"receipt", "newsletter", "subscription"} <= set(kinds)
    issues = [
        NewsletterJob.model_validate(json.loads(b))
        for b in blocks(DOCS, "json")
        if '"newsletter"' in b
    ]
    assert any(isinstance(job.data.get("pl"), dict) for job in issues)  # data by locale
    assert any(
        any("pl" in article for article in job.data.get("articles", [])) for job in issues
    )  # an article by locale


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in (ROOT / "README.md", DOCS):
        for body in blocks(path, "sh"):
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] in ("mailer", "./scripts/mailer"):
                    found.append((f"{path.name}: {line.strip()}", words))
    return found


def test_the_commands_shown_run_as_written() -> None:
    shown = commands()
    assert len(shown) >= 8
    for where, words in shown:
        assert words[0] == "./scripts/mailer", f"{where}: run it as ./scripts/mailer"
        try:
            parser().parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"{where}: not a valid mailer command")
        for word in words[1:]:
            if word.startswith("examples/"):
                assert (ROOT / word).is_file(), where


def test_scripts_mailer_previews_and_test_sends_as_the_readme_says(
    tmp_path: Path, database_url: str
) -> None:
    """The quick start's `./scripts/mailer`: local settings made in a fresh home, and with no
    relay configured a test send lands in the capture folder, signed and marked."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SMTP_CAPTURE_DIR": str(tmp_path / "outbox"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "scripts" / "mailer"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    shown = run(
        "issue",
        "preview",
        "examples/newsletter.json",
        "--locale",
        "en",
        "--out",
        str(tmp_path / "p"),
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "en: What's new in LucidCRM — November 2026"
    english = (tmp_path / "p" / "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11.en.txt").read_text()
    assert "Kanban boards in LucidCRM" in english and "Przeciągnij" not in english
    sent = run("issue", "test", "examples/newsletter.json", "--to", "qa@lucid.example")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[-1] == (
        f"1 of 1 test message(s) sent via the embedded capture into {tmp_path / 'outbox'}"
    )
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    data = eml.read_bytes()
    assert b"\r\nX-Mailer-Test: 0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11\r\n" in data
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["Subject"] == "[TEST] Nowości w LucidCRM — listopad 2026"  # the list's locale
    assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
