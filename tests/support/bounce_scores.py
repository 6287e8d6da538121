"""The classifier scored against the labelled sisimai corpus, as its README maps sisimai's
reasons to our kinds: what the corpus test asserts and what `bench.bounces` prints.

Per recipient the label gives a kind; a message's kind is the gravest of its recipients'
(complaint > hard > soft > policy > ignored). The two messages that are not bounces expect
`ignored`; the two messages without labels are run (exceptions, time) and not scored. The
labelled recipients are those with an address: sisimai writes
`undisclosed-recipient-in-headers@libsisimai.org.invalid` where a complaint names nobody.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailer.core.bounces.kinds import Kind, Report

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
SOFT_REASONS = frozenset(
    {
        "mailboxfull",
        "exceedlimit",
        "mesgtoobig",
        "systemfull",
        "systemerror",
        "networkerror",
        "mailererror",
        "expired",
        "suspend",
        "filtered",
        "onhold",
        "undefined",
    }
)
POLICY_REASONS = frozenset(
    {
        "blocked",
        "spamdetected",
        "policyviolation",
        "rejected",
        "securityerror",
        "virusdetected",
        "authfailure",
        "badreputation",
        "requireptr",
        "norelaying",
        "notcompliantrfc",
        "contenterror",
        "failedstarttls",
        "speeding",
        "ratelimited",
        "toomanyconn",
        "syntaxerror",
    }
)
IGNORED_REASONS = frozenset({"vacation", "delivered"})
COMPLAINT_FEEDBACK = frozenset({"abuse", "fraud", "opt-out"})
# A message's kind is the gravest of its recipients'.
ORDER = (Kind.COMPLAINT, Kind.HARD, Kind.SOFT, Kind.POLICY, Kind.IGNORED)
KINDS = (Kind.HARD, Kind.SOFT, Kind.POLICY, Kind.COMPLAINT, Kind.IGNORED, Kind.UNPARSEABLE)


def expected_kind(label: dict[str, Any]) -> Kind:
    """What one recipient's label means in our kinds (the corpus README's table)."""
    reason = label["reason"]
    if label.get("delay_notice") or reason in IGNORED_REASONS:
        return Kind.IGNORED
    if reason == "feedback":
        feedback = label.get("feedbacktype", "")
        if feedback in COMPLAINT_FEEDBACK:
            return Kind.COMPLAINT
        return Kind.POLICY if feedback == "auth-failure" else Kind.IGNORED
    if reason in HARD_REASONS:
        hard = label["hardbounce"] and label["status"].startswith("5")
        return Kind.HARD if hard else Kind.SOFT
    if reason in SOFT_REASONS:
        return Kind.SOFT
    if reason in POLICY_REASONS:
        return Kind.POLICY
    raise ValueError(f"a reason the corpus README does not map: {reason}")


def gravest(kinds: Iterable[Kind]) -> Kind:
    return min(kinds, key=ORDER.index)


def coarse(kind: Kind) -> str:
    """soft ~ policy and ignored ~ unparseable, as the coarse agreement accepts."""
    if kind in (Kind.SOFT, Kind.POLICY):
        return "soft/policy"
    if kind in (Kind.IGNORED, Kind.UNPARSEABLE):
        return "ignored/unparseable"
    return kind.value


@dataclass(frozen=True)
class Scored:
    name: str  # the file's path under the corpus, e.g. maildir/bsd/lhost-qmail-01.eml
    mta: str
    expected: Kind | None  # None: unlabelled, run but not scored
    report: Report
    labelled: tuple[str, ...]  # the labelled recipients' addresses, lower-cased
    seconds: float

    @property
    def found(self) -> frozenset[str]:
        """The addresses the report names: a DSN's Original-Recipient, and its
        Final-Recipient where that differs (sisimai reads the latter)."""
        return frozenset(
            address.lower()
            for one in self.report.recipients
            for address in (one.address, one.final_recipient)
            if address
        )


@dataclass
class Scores:
    messages: list[Scored] = field(default_factory=list)
    exceptions: list[tuple[str, str]] = field(default_factory=list)

    @property
    def scored(self) -> list[Scored]:
        return [one for one in self.messages if one.expected is not None]

    def confusion(self) -> Counter[tuple[Kind, Kind]]:
        """(expected, ours) → messages."""
        return Counter((one.expected, one.report.kind) for one in self.scored if one.expected)

    @property
    def strict(self) -> float:
        scored = self.scored
        return sum(one.report.kind is one.expected for one in scored) / len(scored)

    @property
    def coarse(self) -> float:
        scored = self.scored
        agree = sum(
            one.expected is not None and coarse(one.report.kind) == coarse(one.expected)
            for one in scored
        )
        return agree / len(scored)

    def hard(self) -> tuple[list[Scored], list[Scored]]:
        """(the messages labelled hard, the messages called hard that are not)."""
        labelled = [one for one in self.scored if one.expected is Kind.HARD]
        false = [
            one
            for one in self.scored
            if one.report.kind is Kind.HARD and one.expected is not Kind.HARD
        ]
        return labelled, false

    @property
    def hard_recall(self) -> float:
        labelled, _ = self.hard()
        return sum(one.report.kind is Kind.HARD for one in labelled) / len(labelled)

    @property
    def false_hard(self) -> list[str]:
        return [one.name for one in self.hard()[1]]

    def bounces(self) -> list[Scored]:
        """The scored messages that are bounces (the two that are not left out)."""
        return [one for one in self.scored if one.mta != "not-a-bounce"]

    @property
    def unparseable(self) -> float:
        bounces = self.bounces()
        return sum(one.report.kind is Kind.UNPARSEABLE for one in bounces) / len(bounces)

    def recipients(self) -> tuple[int, int]:
        """(labelled recipients found, labelled recipients)."""
        total = hits = 0
        for one in self.scored:
            found = one.found
            for address in one.labelled:
                total += 1
                hits += address in found
        return hits, total

    @property
    def found_rate(self) -> float:
        hits, total = self.recipients()
        return hits / total

    def disagreements(self) -> list[Scored]:
        return [one for one in self.scored if one.report.kind is not one.expected]

    def by_family(self) -> list[tuple[str, int, int, int, int]]:
        """(mta, messages, strict agreement, hard labelled, hard called hard) per family."""
        rows: dict[str, list[int]] = {}
        for one in self.scored:
            row = rows.setdefault(one.mta, [0, 0, 0, 0])
            row[0] += 1
            row[1] += one.report.kind is one.expected
            row[2] += one.expected is Kind.HARD
            row[3] += one.expected is Kind.HARD and one.report.kind is Kind.HARD
        found = [(mta, row[0], row[1], row[2], row[3]) for mta, row in rows.items()]
        return sorted(found, key=lambda r: (-r[1], r[0]))

    @property
    def mean_seconds(self) -> float:
        return sum(one.seconds for one in self.messages) / len(self.messages)

    @property
    def worst(self) -> Scored:
        return max(self.messages, key=lambda one: one.seconds)


def score(
    root: Path, labels: dict[str, Any], classify: Callable[[bytes], Report], *, rounds: int = 1
) -> Scores:
    """Every labelled file under `root` classified; the time is the least of `rounds` runs."""
    scores = Scores()
    for name, entry in sorted(labels["messages"].items()):
        raw = (root / name).read_bytes()
        best = float("inf")
        report: Report | None = None
        try:
            for _ in range(rounds):
                started = time.perf_counter()
                report = classify(raw)
                best = min(best, time.perf_counter() - started)
        except Exception as error:
            scores.exceptions.append((name, f"{type(error).__name__}: {error}"))
            continue
        assert report is not None
        records = entry["recipients"]
        expected: Kind | None
        if entry.get("not_a_bounce"):
            expected = Kind.IGNORED
        elif records:
            expected = gravest(expected_kind(one) for one in records)
        else:
            expected = None
        # sisimai writes a placeholder where a complaint names nobody; it is no address.
        labelled = tuple(
            one["recipient"].lower()
            for one in records
            if one["recipient"] and not one["recipient"].endswith(".invalid")
        )
        scores.messages.append(Scored(name, entry["mta"], expected, report, labelled, best))
    return scores
