"""The classifier over the labelled sisimai corpus: 599 real bounces from about sixty MTAs
and remote sites, scored against the field's reference labels as the corpus README maps
them to our kinds (tests/support/bounce_scores.py).

The corpus is test data outside the repository, read in place (tests/support/corpora.py);
without it this module is skipped with one line that names it, and under CI=true it fails.
Speed is the benchmark's (bench/bounces.py), not this test's.
"""

from __future__ import annotations

import logging

import pytest

from mailer.core.bounces.kinds import Kind
from mailer.core.bounces.reports import classify_report
from tests.support import bounce_scores, corpora

_FOUND = corpora.sisimai()
if _FOUND is None:
    corpora.missing(corpora.SISIMAI_MISSING)
assert _FOUND is not None
CORPUS = _FOUND

# The one message called hard that the labels do not call hard, argued in the README.
ARGUED_FALSE_HARD = {"maildir/bsd/lhost-x2-01.eml"}


@pytest.fixture(scope="module")
def scores() -> bounce_scores.Scores:
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    return bounce_scores.score(CORPUS.maildir.parent, CORPUS.labels, classify_report)


def test_every_message_is_read_without_an_exception(scores: bounce_scores.Scores) -> None:
    assert len(scores.messages) == 601
    assert scores.exceptions == []
    for one in scores.messages:
        assert one.report.reason
        for recipient in one.report.recipients:
            assert recipient.diagnostic is None or "@" not in recipient.diagnostic


def test_real_hard_bounces_are_called_hard(scores: bounce_scores.Scores) -> None:
    """Measured: 166 of the 178 messages labelled hard (93.3 %)."""
    labelled, _ = scores.hard()
    missed = [one.name for one in labelled if one.report.kind is not Kind.HARD]
    assert len(labelled) == 178
    assert scores.hard_recall >= 0.92, f"{scores.hard_recall:.1%}; missed {missed}"


def test_at_most_one_good_address_is_called_hard(scores: bounce_scores.Scores) -> None:
    """A false hard suppresses a good customer at once: 1, argued in the README."""
    assert set(scores.false_hard) <= ARGUED_FALSE_HARD, scores.false_hard
    assert len(scores.false_hard) <= 1


def test_the_kinds_agree_with_the_labels(scores: bounce_scores.Scores) -> None:
    """Measured: strict 93.3 %, coarse (soft ~ policy, ignored ~ unparseable) 96.5 %."""
    assert scores.coarse >= 0.92, f"coarse {scores.coarse:.1%}"
    assert scores.strict >= 0.85, f"strict {scores.strict:.1%}"


def test_almost_every_bounce_is_read(scores: bounce_scores.Scores) -> None:
    """Measured: 5 of 597 bounces unparseable (0.8 %)."""
    assert scores.unparseable <= 0.02, f"{scores.unparseable:.1%} unparseable"


def test_the_labelled_recipients_are_found(scores: bounce_scores.Scores) -> None:
    hits, total = scores.recipients()
    assert scores.found_rate >= 0.98, f"found {hits} of {total}"


def test_policy_is_never_called_hard(scores: bounce_scores.Scores) -> None:
    """Our IP, content or sender refused is never the recipient's fault."""
    confusion = scores.confusion()
    assert confusion[(Kind.POLICY, Kind.HARD)] == 0
    assert confusion[(Kind.COMPLAINT, Kind.COMPLAINT)] == 15


def test_every_decision_names_its_evidence(scores: bounce_scores.Scores) -> None:
    for one in scores.messages:
        if one.report.kind is not Kind.UNPARSEABLE:
            assert one.report.evidence, one.name
