"""The classifier over the real bounce corpus: the 117 test messages of flufl.bounce, with
the recipients flufl.bounce's own tests expect of them.

The corpus is test data outside the repository, read in place (tests/support/corpora.py says
where it is looked for); without it this module is skipped with one line that names it, and
under CI=true it fails.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mailer.core.bounces.kinds import Kind, Report
from mailer.core.bounces.reports import classify_report
from tests.support import corpora

_FOUND = corpora.flufl_bounce()
if _FOUND is None:
    corpora.missing(corpora.FLUFL_MISSING)
assert _FOUND is not None
CORPUS = _FOUND
MESSAGES = sorted(CORPUS.messages.glob("*.txt"))


def _expected() -> dict[str, tuple[set[str], bool]]:
    """File → (the recipients flufl.bounce's own tests expect, whether it is a delay notice).
    A file is listed once per detector: the union is what bounced."""
    expected: dict[str, tuple[set[str], bool]] = {}
    for entry in CORPUS.expected:
        addresses, temporary = expected.setdefault(entry.file, (set(), entry.temporary))
        addresses.update(address.lower() for address in entry.recipients)
        expected[entry.file] = (addresses, temporary or entry.temporary)
    return expected


EXPECTED = _expected()


def found(report: Report) -> set[str]:
    return {one.address.lower() for one in report.recipients if one.address}


def corpus_report(name: str) -> Report:
    return classify_report((CORPUS.messages / name).read_bytes())


def test_the_corpus_is_all_there() -> None:
    assert len(MESSAGES) == 117
    assert set(EXPECTED) <= {path.name for path in MESSAGES}


@pytest.mark.parametrize("path", MESSAGES, ids=lambda path: path.name)
def test_every_corpus_message_is_classified_without_an_exception(path: Path) -> None:
    report = classify_report(path.read_bytes())
    assert isinstance(report.kind, Kind) and report.reason
    for one in report.recipients:
        assert one.reason
        assert one.diagnostic is None or "@" not in one.diagnostic  # scrubbed


def test_the_expected_recipients_are_found() -> None:
    """Measured: 133 of 133 expected recipients found in the 115 files that list any."""
    missed = {}
    total = hits = 0
    for name, (addresses, _) in EXPECTED.items():
        report = corpus_report(name)
        total += len(addresses)
        hits += len(addresses & found(report))
        if addresses - found(report):
            missed[name] = (sorted(addresses - found(report)), report.kind, report.reason)
    assert total == 133
    assert hits / total == 1.0, f"found {hits} of {total}; missed: {missed}"


def test_no_temporary_failure_is_counted_hard() -> None:
    """Delay notices in the corpus (11 files) and every 4.x.x or delayed block: none hard."""
    temporary = [name for name, (_, is_temporary) in EXPECTED.items() if is_temporary]
    assert len(temporary) == 11
    for name in temporary:
        report = corpus_report(name)
        assert report.kind is not Kind.HARD, name
        assert report.kind in (Kind.IGNORED, Kind.SOFT), (name, report.reason)
    for path in MESSAGES:
        for one in classify_report(path.read_bytes()).recipients:
            if one.action == "delayed" or (one.status or "").startswith("4."):
                assert one.kind is not Kind.HARD, (path.name, one)


def test_the_corpus_rates() -> None:
    """Measured over the 117 files: 36 hard, 63 soft, 1 policy, 14 ignored, 3 unparseable;
    every hard one says what proves it (a code or a phrase)."""
    kinds = [corpus_report(path.name) for path in MESSAGES]
    counts = {kind: sum(report.kind is kind for report in kinds) for kind in Kind}
    assert counts == {
        Kind.HARD: 36,
        Kind.SOFT: 63,
        Kind.POLICY: 1,
        Kind.COMPLAINT: 0,
        Kind.IGNORED: 14,
        Kind.UNPARSEABLE: 3,
    }
    for report in kinds:
        if report.kind is Kind.HARD:
            assert report.evidence and ('"' in report.evidence or "5.1.1" in report.evidence)


@pytest.mark.parametrize(
    ("name", "kind", "status", "words"),
    [
        ("dsn_12.txt", Kind.HARD, "5.1.1", "does not exist"),
        ("dsn_15.txt", Kind.HARD, "5.1.1", "does not exist"),  # a DSN forwarded in a report
        ("dsn_02.txt", Kind.SOFT, "4.4.7", "4.4.7 delivery time expired"),
        ("dsn_05.txt", Kind.IGNORED, "4.4.1", "delayed"),
        ("dsn_01.txt", Kind.SOFT, "5.0.0", "mailbox full"),
        ("dsn_03.txt", Kind.SOFT, None, "too big"),
        # Status 5.0.0, "550 ... user unknown" in reply to RCPT TO (the report's own text).
        ("dsn_10.txt", Kind.HARD, "5.0.0", "no such user"),
        # Status: 5.0.0, Diagnostic-Code: 550 5.7.1 ... unsolicited mail: Gmail blocked us.
        ("simple_42.txt", Kind.POLICY, "5.7.1", "not the recipient's fault"),
        # Exim: "550 5.1.1 unknown or illegal user" after RCPT TO: hard, though in prose.
        ("exim_01.txt", Kind.HARD, "5.1.1", "the address does not exist"),
        ("simple_03.txt", Kind.IGNORED, None, "delay notice"),
        # Domino's "not listed in Domino Directory" is an unknown user, not a blocklist.
        ("simple_11.txt", Kind.HARD, None, "no such user"),
        # Exchange quotes our Subject ("Virus in ma mail"): our words are no reason.
        ("microsoft_02.txt", Kind.HARD, None, "no such user"),
        ("qmail_08.txt", Kind.IGNORED, None, "auto-reply"),
    ],
)
def test_corpus_samples_get_their_kind_and_reason(
    name: str, kind: Kind, status: str | None, words: str
) -> None:
    report = corpus_report(name)
    assert report.kind is kind
    assert words in report.reason
    if report.recipients:
        assert report.recipients[0].status == status


def test_a_dsn_gives_each_recipient_its_action_status_and_scrubbed_diagnostic() -> None:
    report = corpus_report("dsn_14.txt")
    (one,) = report.recipients
    assert (one.address, one.action, one.status) == ("userx@example.com.dk", "failed", "5.1.1")
    assert one.diagnostic and "@" not in one.diagnostic
    assert one.diagnostic.startswith("550 5.1.1")


def test_a_bounce_that_says_auto_replied_is_still_a_bounce() -> None:
    """Postfix and others mark their bounces Auto-Submitted: auto-replied too."""
    report = corpus_report("simple_45.txt")
    assert report.source == "non-standard" and report.kind is Kind.SOFT


def test_a_bounce_without_from_is_read_though_flufl_bounce_raises_on_it() -> None:
    """flufl.bounce 6.0.0's Yale detector raises IndexError on a single-part message without
    From (Python 3.11.7's getaddresses), so the detectors after it never run."""
    raw = (CORPUS.messages / "qmail_01.txt").read_bytes()
    raw = raw.replace(b"From: MAILER-DAEMON@gate0.n-h.net\n", b"")
    report = classify_report(raw)
    assert report.source == "non-standard" and found(report) == {"userx@example.de"}


def test_a_bounce_with_an_8bit_from_is_read_though_flufl_bounce_raises_on_it() -> None:
    """Its Sina detector calls .lower() on the Header object an 8-bit From becomes."""
    raw = (CORPUS.messages / "qmail_01.txt").read_bytes()
    raw = raw.replace(b"From: MAILER-DAEMON@", b"From: \xc5\x81ukasz <MAILER-DAEMON@")
    raw = raw.replace(b"gate0.n-h.net\nTo:", b"gate0.n-h.net>\nTo:")
    report = classify_report(raw)
    assert report.source == "non-standard" and found(report) == {"userx@example.de"}


def test_mangled_corpus_messages_never_reach_the_safety_net() -> None:
    """300 corpus messages with random bytes changed, cut or inserted (fixed seed): every one
    is classified by the rules; none ends in a catch-all for an exception (without the retry
    around flufl.bounce, 38 % of such messages did)."""
    rng = random.Random(20261201)
    messages = [path.read_bytes() for path in MESSAGES]
    inserts = [b"\n\n", b";", b"=?utf-8?q?", b"\x00", b"\xff", b"boundary=", b'"', b"<", b"@"]
    for _ in range(300):
        raw = bytearray(rng.choice(messages))
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(raw))
            roll = rng.random()
            if roll < 0.4:
                raw[at] = rng.randrange(256)
            elif roll < 0.7:
                del raw[at : at + rng.randint(1, 50)]
            else:
                raw[at:at] = rng.choice(inserts)
        report = classify_report(bytes(raw))
        assert "could not" not in report.reason, bytes(raw)[:300]
