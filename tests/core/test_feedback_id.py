"""The Feedback-ID header of newsletters (Gmail's Feedback Loop): one unfolded line."""

from __future__ import annotations

import pytest

from mailer.core.messages import ListHeaders, compose
from mailer.errors import InvalidJob
from tests.core.test_messages import draft

URL = "https://mail.lucid.example/u/abc"


def test_a_feedback_id_is_one_line_after_the_list_headers() -> None:
    value = "0e9b7d8c1c554f0ab7b50d6f3a2b9c11:lucid-news:newsletter:mailer"
    raw = compose(draft(list_headers=ListHeaders("<lucid-news.lucid.example>", URL, value)))
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert f"\r\nFeedback-ID: {value}\r\n" in head + "\r\n"
    assert "Feedback-ID" not in compose(draft()).split(b"\r\n\r\n", 1)[0].decode()


@pytest.mark.parametrize("value", ["a:b\r\nBcc: x@example.org", "a b:c", "", "ą:b:c:d", "x" * 201])
def test_a_feedback_id_that_is_not_one_printable_word_is_refused(value: str) -> None:
    with pytest.raises(InvalidJob, match=r"^Feedback-ID: "):
        compose(draft(list_headers=ListHeaders("<lucid-news.lucid.example>", URL, value)))
