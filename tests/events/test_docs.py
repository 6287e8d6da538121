"""docs/events.md as written: every type named, the body's fields as the code makes them,
and the commands it shows parse."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from mailer.adapters import outbox
from mailer.cli import parser
from mailer.core.events import EVENT_TYPES, NOT_YET_EMITTED, body

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def test_every_type_is_documented_and_those_not_emitted_said_so() -> None:
    text = DOC.read_text()
    for type_ in EVENT_TYPES:
        if type_ in NOT_YET_EMITTED:
            assert f"`{type_}`" in text.split("Not yet emitted:")[1].split("\n\n")[0], type_
        else:
            assert f"| `{type_}` |" in text, type_


def test_the_example_body_has_the_fields_an_event_has() -> None:
    (example,) = blocks("json")
    shown = json.loads(example.replace("…the job's id…", "").replace("…", ""))
    assert list(shown) == list(body(outbox.event("message.delivered")))
    fields = re.findall(r"^\| `(\w+)` \|", DOC.read_text().split("## Types")[0], re.M)
    assert fields == list(shown)


def test_the_commands_shown_parse() -> None:
    shown = [
        shlex.split(line)
        for block in blocks("sh")
        for line in block.splitlines()
        if line.startswith("./scripts/mailer events ")
    ]
    assert len(shown) == 2
    for words in shown:
        assert words[:3] == ["./scripts/mailer", "events", "replay"]
        parser().parse_args(words[1:])
