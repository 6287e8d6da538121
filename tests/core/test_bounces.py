"""The classifier over built DSNs, ARF and auto-reply samples, the synchronous reply path,
and the soft-bounce rule over a simulated calendar. The real bounce corpus is read by
test_bounce_corpus.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pytest

from mailer.core.bounces.kinds import Kind, Recipient, Report
from mailer.core.bounces.replies import ReplyKind, classify_reply
from mailer.core.bounces.reports import classify_report
from mailer.core.bounces.soft_bounces import soft_bounce_decision
from mailer.core.return_paths import ReturnPathKeys, Verdict, decode, return_path
from mailer.core.scrubbing import scrub

KEYS = ReturnPathKeys.from_secrets(b"s" * 40)
SENT = date(2026, 12, 1)
DOMAIN = "bounces.lucid.example"
VERP = return_path(KEYS, 4242, SENT, DOMAIN)


def found(report: Report) -> set[str]:
    return {one.address.lower() for one in report.recipients if one.address}


def by_address(report: Report) -> dict[str | None, Recipient]:
    return {one.address: one for one in report.recipients}


# ---------------------------------------------------------------- built DSNs with our token


def dsn(blocks: Sequence[str], *, to: str = VERP, envid: str = "4242") -> bytes:
    recipients = "\n".join(blocks)
    return f"""From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: <{to}>
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Original-Envelope-Id: {envid}

{recipients}
--B
Content-Type: text/rfc822-headers

Return-Path: <{VERP}>
From: Lucid News <news@lucid.example>
To: anna@example.net
Subject: November

--B--
""".encode()


def block(address: str, action: str, status: str, diagnostic: str = "") -> str:
    lines = [f"Final-Recipient: rfc822; {address}", f"Action: {action}", f"Status: {status}"]
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    return "\n".join(lines) + "\n"


def test_a_dsn_to_our_return_path_names_the_delivery() -> None:
    report = classify_report(dsn([block("anna@example.net", "failed", "5.1.1", "550 5.1.1 no")]))
    assert report.kind is Kind.HARD and report.source == "dsn"
    assert report.envelope_id == "4242"
    assert report.return_path_token == VERP[2:].partition("@")[0]
    decoded = decode(KEYS, report.return_path_token, today=SENT, max_age_days=30)
    assert (decoded.verdict, decoded.delivery_id) == (Verdict.VALID, 4242)


@pytest.mark.parametrize("status", ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.4.4"])
def test_the_hard_codes_from_a_structured_dsn_are_hard(status: str) -> None:
    report = classify_report(dsn([block("anna@example.net", "failed", status)]))
    assert (report.kind, report.recipients[0].status) == (Kind.HARD, status)


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.2.2", "552 5.2.2 mailbox full", Kind.SOFT),
        ("5.3.4", "552 5.3.4 message too big", Kind.SOFT),
        ("5.4.4", "550 5.4.4 unable to route", Kind.HARD),  # no MX, no address: no domain
        # The words overrule the code where they name a cause of their own: our IP listed,
        # a full mailbox, a DNS failure.
        ("5.1.1", "550 5.7.1 IP address blacklisted by recipient", Kind.POLICY),
        ("5.1.3", "553 http://www.spamhaus.org/query/bl?ip=192.0.2.222", Kind.POLICY),
        ("5.1.1", "552 sorry, mailbox is over quota temporarily (#5.1.1)", Kind.SOFT),
        ("5.1.1", "550 5.1.1 has sent to too many recipients this hour", Kind.POLICY),
        (
            "5.4.4",
            "Name service error for name=x.example type=MX: Malformed or unexpected"
            " name server reply",
            Kind.SOFT,
        ),
        # Our sender's domain has a null MX (RFC 7505 X.7.27): ours to fix, not the recipient's.
        ("5.7.27", "550 Host does not accept mail", Kind.POLICY),
        # X.2.x says the mailbox exists: "user unknown" words with it are not proof.
        ("5.2.1", "550 5.2.1 <anna@example.net>... User Unknown", Kind.SOFT),
        # The words of an unknown user with an addressing code (Office 365's 5.1.351).
        ("5.1.351", "550 5.1.351 Remote server returned unknown recipient", Kind.HARD),
        ("5.1.0", "550 5.1.0 address rejected", Kind.SOFT),
        (
            "5.7.1",
            "550 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
            Kind.POLICY,
        ),
        ("5.7.26", "550 5.7.26 unauthenticated email is not accepted", Kind.POLICY),
        ("5.6.0", "554 5.6.0 content rejected", Kind.POLICY),
        ("5.1.8", "553 5.1.8 sender address domain does not exist", Kind.POLICY),
        ("5.0.0", "554 rejected: listed at bl.spamcop.net", Kind.POLICY),
        # Words alone, with neither a code nor the command refused, are not proof: some
        # filters answer "user unknown" to mail they refuse after DATA.
        ("5.0.0", "550 user unknown", Kind.SOFT),
        ("4.2.2", "452 4.2.2 over quota", Kind.SOFT),  # failed after retries: soft
        ("2.0.0", "250 ok", Kind.IGNORED),
        ("failure", "", Kind.SOFT),  # no code at all: counted soft, not hard
    ],
)
def test_codes_decide_policy_and_soft(status: str, diagnostic: str, kind: Kind) -> None:
    report = classify_report(dsn([block("anna@example.net", "failed", status, diagnostic)]))
    assert report.kind is kind, report.reason


def test_a_5_0_0_status_takes_the_specific_code_of_its_diagnostic() -> None:
    blocks = [block("anna@example.net", "failed", "5.0.0", "550 5.1.1 <anna@example.net>: no")]
    (one,) = classify_report(dsn(blocks)).recipients
    assert (one.kind, one.status) == (Kind.HARD, "5.1.1")
    assert one.diagnostic == "550 5.1.1 <address>: no"


def test_delayed_and_delivered_blocks_are_ignored_and_the_gravest_recipient_leads() -> None:
    report = classify_report(
        dsn(
            [
                block("late@example.net", "delayed", "4.4.1"),
                block("fine@example.net", "delivered", "2.0.0"),
                block("gone@example.net", "failed", "5.1.1"),
                block("full@example.net", "failed", "5.2.2"),
            ]
        )
    )
    kinds = {address: one.kind for address, one in by_address(report).items()}
    assert kinds == {
        "late@example.net": Kind.IGNORED,
        "fine@example.net": Kind.IGNORED,
        "gone@example.net": Kind.HARD,
        "full@example.net": Kind.SOFT,
    }
    assert report.kind is Kind.HARD and report.reason.startswith("4 recipients; 5.1.1")


def test_a_delayed_dsn_alone_is_ignored() -> None:
    report = classify_report(dsn([block("anna@example.net", "delayed", "4.4.7")]))
    assert (report.kind, report.reason) == (
        Kind.IGNORED,
        "delayed: the remote server is still trying",
    )


def test_a_recipient_block_with_neither_action_nor_status_is_unparseable() -> None:
    report = classify_report(dsn(["Final-Recipient: rfc822; anna@example.net\n"]))
    assert report.kind is Kind.UNPARSEABLE


def test_original_recipient_is_preferred_and_bare_addresses_are_read() -> None:
    blocks = [
        "Original-Recipient: rfc822;Anna@Example.net\nFinal-Recipient: rfc822; a@mx.example.net\n"
        "Action: failed\nStatus: 5.1.1\n",
        "Final-Recipient: <bare@example.net>\nAction: failed\nStatus: 5.1.1\n",
        "Final-Recipient: x400; weird\nAction: failed\nStatus: 5.1.1\n",
    ]
    assert [one.address for one in classify_report(dsn(blocks)).recipients] == [
        "Anna@Example.net",
        "bare@example.net",
        None,
    ]


# ---------------------------------------------------------------- ARF (RFC 5965)


def arf(feedback_type: str | None, *, rcpt: str | None = "anna@example.net") -> bytes:
    fields = [f"Feedback-Type: {feedback_type}"] if feedback_type else []
    fields += ["User-Agent: SomeGenerator/1.0", "Version: 1", f"Original-Mail-From: <{VERP}>"]
    if rcpt:
        fields.append(f"Original-Rcpt-To: <{rcpt}>")
    fields.append("Source-IP: 192.0.2.1")
    body = "\n".join(fields)
    return f"""From: <abusedesk@example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: November
To: <fbl@lucid.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1"

--part1
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.1.

--part1
Content-Type: message/feedback-report

{body}

--part1
Content-Type: message/rfc822
Content-Disposition: inline

Return-Path: <{VERP}>
From: Lucid News <news@lucid.example>
To: Anna <redacted@example.net>
Subject: November

Our news.
--part1--
""".encode()


@pytest.mark.parametrize(
    ("feedback_type", "kind"),
    [
        ("abuse", Kind.COMPLAINT),
        ("fraud", Kind.COMPLAINT),
        ("not-spam", Kind.IGNORED),
        ("auth-failure", Kind.POLICY),
        ("virus", Kind.POLICY),
        ("other", Kind.IGNORED),
    ],
)
def test_arf_feedback_types(feedback_type: str, kind: Kind) -> None:
    report = classify_report(arf(feedback_type))
    assert (report.kind, report.source, report.feedback_type) == (kind, "arf", feedback_type)
    assert [one.address for one in report.recipients] == ["anna@example.net"]
    assert report.return_path_token == VERP[2:].partition("@")[0]


def test_a_redacted_complaint_falls_back_to_the_returned_to_header() -> None:
    report = classify_report(arf("abuse", rcpt=None))
    assert report.kind is Kind.COMPLAINT
    assert [one.address for one in report.recipients] == ["redacted@example.net"]
    assert report.return_path_token is not None  # the delivery is known from the token


def test_a_complaint_naming_nobody_still_counts_through_its_token() -> None:
    raw = arf("abuse", rcpt=None).replace(b"To: Anna <redacted@example.net>\n", b"")
    report = classify_report(raw)
    assert report.kind is Kind.COMPLAINT
    assert [one.address for one in report.recipients] == [None]


def test_an_arf_report_without_feedback_type_is_unparseable() -> None:
    assert classify_report(arf(None)).kind is Kind.UNPARSEABLE


# ---------------------------------------------------------------- auto-replies


def reply(headers: str, body: str = "I am away until Monday.") -> bytes:
    return f"From: Anna <anna@example.net>\nTo: <{VERP}>\n{headers}\n\n{body}\n".encode()


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Re: November\nAuto-Submitted: auto-replied",
        "Subject: Out of Office: November",
        "Subject: Automatic reply: November",
        "Subject: Urlop do 5 stycznia",
        "Subject: Automatic reply: your order was rejected",  # not a bounce for its words
        "Subject: Re: November\nX-Autoreply: yes",
        "Subject: Re: November\nPrecedence: auto_reply",
    ],
)
def test_auto_replies_are_ignored(headers: str) -> None:
    report = classify_report(reply(headers))
    assert (report.kind, report.source) == (Kind.IGNORED, "auto-reply")
    assert report.return_path_token == VERP[2:].partition("@")[0]


# ---------------------------------------------------------------- odd input


def test_a_non_standard_bounce_with_only_our_token_is_tied_to_its_delivery() -> None:
    raw = (
        f"From: MAILER-DAEMON@mx.example.net\nTo: <{VERP}>\nSubject: Undeliverable\n\n"
        "Your message could not be delivered: 552 mailbox over quota.\n"
    ).encode()
    report = classify_report(raw)
    assert (report.kind, report.source) == (Kind.SOFT, "non-standard")
    assert report.recipients[0].address is None
    assert "mailbox full" in report.reason
    assert report.return_path_token is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Subject: hello\n\nJust a letter.\n",
        b"Content-Type: multipart/report; boundary=x\n\n--x\n"
        b"Content-Type: message/delivery-status\n",
        b"Content-Type: text/plain; charset=no-such-charset\n\nDelivery failed \xff\n",
    ],
)
def test_junk_is_unparseable_and_never_raises(raw: bytes) -> None:
    assert classify_report(raw).kind is Kind.UNPARSEABLE


def test_a_message_of_too_many_parts_is_refused_before_it_is_parsed() -> None:
    """Nested 1,200 deep, the stdlib parser overflows the stack after seconds of work."""
    depth = 1200
    head = "".join(
        f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth)
    )
    tail = "".join(f"\n--b{i}--\n" for i in reversed(range(depth)))
    report = classify_report((head + "Content-Type: text/plain\n\nx" + tail).encode())
    assert (report.kind, report.reason) == (Kind.UNPARSEABLE, "more than 100 MIME parts")


def test_scrub_removes_addresses_and_bounds_the_text() -> None:
    assert scrub("550 <a.b+c@example.net>: no\n  such  user x@y.z") == (
        "550 <address>: no such user <address>"
    )
    assert len(scrub("x " * 1000)) == 500
    # A quoted local part (RFC 5321 allows it) is an address too: it was shown in clear.
    assert scrub('550 5.1.1 <"jan..k"@example.pl>... User Unknown') == (
        "550 5.1.1 <address>... User Unknown"
    )
    # The recipient named as such in a relay's reply; anyone else as <address>.
    assert scrub("550 <Jan@Example.pl> and bob@example.net", "jan@example.pl") == (
        "550 <recipient> and <address>"
    )


# ---------------------------------------------------------------- the synchronous path


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "stage", "kind", "retry"),
    [
        (250, "2.0.0", "Ok", "rcpt", ReplyKind.ACCEPTED, False),
        (550, "5.1.1", "5.1.1 user unknown", "rcpt", ReplyKind.HARD, False),
        (550, None, "5.1.10 null MX", "rcpt", ReplyKind.HARD, False),
        # At RCPT a server says whether the mailbox exists: its words are proof, code or not.
        (550, None, "No such user", "rcpt", ReplyKind.HARD, False),
        (550, None, "No such user", "data", ReplyKind.SOFT, False),  # after DATA, a filter
        (550, "5.1.1", "5.1.1 <a@b.example>: over quota", "rcpt", ReplyKind.SOFT, False),
        (550, None, "blocked using zen.spamhaus.org", "rcpt", ReplyKind.POLICY, False),
        (550, "5.1.1", "5.1.1 Your IP is blacklisted", "rcpt", ReplyKind.POLICY, False),
        (552, "5.2.2", "mailbox full", "data", ReplyKind.SOFT, False),
        (450, "4.2.1", "try later", "rcpt", ReplyKind.SOFT, True),
        (451, "4.7.1", "greylisted", "rcpt", ReplyKind.POLICY, True),
        (554, "5.7.1", "blocked using zen.spamhaus.org", "data", ReplyKind.POLICY, False),
        (550, None, "rejected: your IP is listed", "rcpt", ReplyKind.POLICY, False),
        # Refused sender: never the recipient's fault, even with a 5.1.x code.
        (550, "5.1.8", "sender domain does not exist", "rcpt", ReplyKind.SENDER, True),
        (553, "5.1.7", "bad sender address", "mail", ReplyKind.SENDER, True),
        (550, "5.1.1", "sender unknown", "mail", ReplyKind.SENDER, True),
        (535, "5.7.8", "authentication failed", "auth", ReplyKind.SENDER, True),
        (454, "4.7.0", "TLS not available", "starttls", ReplyKind.SENDER, True),
        (554, None, "no service", "connect", ReplyKind.SENDER, True),
        (554, "5.7.1", "Relay access denied", "rcpt", ReplyKind.SENDER, True),
        (550, "4.1.1", "incoherent", "rcpt", ReplyKind.SOFT, False),  # the basic code rules
    ],
)
def test_classify_reply(
    code: int, enhanced: str | None, text: str, stage: str, kind: ReplyKind, retry: bool
) -> None:
    verdict = classify_reply(code, enhanced, text, stage)  # type: ignore[arg-type]
    assert (verdict.kind, verdict.retry) == (kind, retry), verdict.reason
    assert verdict.temporary is (400 <= code < 500)
    assert verdict.reason.startswith(str(code))


def test_a_refused_sender_is_never_a_bad_address() -> None:
    """The session path (outcomes.classify) and this classifier agree: a refused sender holds
    and retries, it never suppresses the recipient."""
    from mailer.core.outcomes import Reply, Retry, classify

    held = classify(Reply(550, "5.1.8 sender domain does not exist", stage="rcpt"))
    assert isinstance(held, Retry) and held.relay_fault
    assert classify_reply(550, None, "5.1.8 sender domain does not exist", "rcpt").kind is (
        ReplyKind.SENDER
    )


# ---------------------------------------------------------------- soft bounces over a calendar


def days(*offsets: int) -> list[date]:
    return [SENT + timedelta(days=offset) for offset in offsets]


def test_four_bounce_days_do_not_suppress_and_five_do() -> None:
    four = days(0, 7, 14, 21)
    assert not soft_bounce_decision(four, SENT + timedelta(days=21)).suppressed
    decision = soft_bounce_decision([*four, SENT + timedelta(days=28)], SENT + timedelta(days=28))
    assert decision.suppressed and decision.bounce_days == 5
    assert decision.since == SENT + timedelta(days=28)


def test_many_bounces_on_one_day_are_one_point() -> None:
    same_day = [SENT] * 10 + days(1, 2, 3)
    decision = soft_bounce_decision(same_day, SENT + timedelta(days=3))
    assert not decision.suppressed and decision.bounce_days == 4


def test_five_bounce_days_spread_over_more_than_the_window_do_not_suppress() -> None:
    spread = days(0, 8, 16, 24, 30)  # the first one falls out of the 30-day window
    decision = soft_bounce_decision(spread, SENT + timedelta(days=30))
    assert not decision.suppressed and decision.bounce_days == 4


def test_the_suppression_lifts_after_the_expiry_and_not_before() -> None:
    history = days(0, 1, 2, 3, 4)
    trigger = SENT + timedelta(days=4)
    # Walk the calendar day by day: suppressed from the trigger for exactly 90 days.
    suppressed_days = [
        today
        for today in (SENT + timedelta(days=offset) for offset in range(200))
        if soft_bounce_decision(history, today).suppressed
    ]
    assert suppressed_days[0] == trigger
    assert suppressed_days[-1] == trigger + timedelta(days=89)
    assert len(suppressed_days) == 90
    lifted = soft_bounce_decision(history, trigger + timedelta(days=90))
    assert not lifted.suppressed and lifted.until == trigger + timedelta(days=90)
    assert "lifted" in lifted.reason


def test_bounces_after_the_threshold_extend_the_suppression() -> None:
    history = days(0, 1, 2, 3, 4, 40, 41, 42, 43, 44)
    decision = soft_bounce_decision(history, SENT + timedelta(days=100))
    assert decision.suppressed and decision.since == SENT + timedelta(days=44)


def test_future_days_are_not_counted_and_the_rule_is_configurable() -> None:
    assert not soft_bounce_decision(days(0, 1, 2, 3, 4), SENT).suppressed
    assert soft_bounce_decision(days(0, 1), SENT + timedelta(days=1), threshold=2).suppressed
    assert not soft_bounce_decision(
        days(0, 5), SENT + timedelta(days=5), threshold=2, window_days=5
    ).suppressed
    short = soft_bounce_decision(
        days(0, 1), SENT + timedelta(days=4), threshold=2, expire_after_days=3
    )
    assert not short.suppressed


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"window_days": 0}, {"expire_after_days": 0}])
def test_a_nonsense_rule_is_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        soft_bounce_decision([], SENT, **bad)


def test_what_a_report_says_of_itself_is_bounded_and_scrubbed() -> None:
    """Feedback-Type and ENVID come from whoever sent the report: no address, no essay."""
    report = classify_report(arf("eve@example.net " + "x" * 200))
    assert report.kind is Kind.IGNORED and "@" not in report.reason
    assert report.feedback_type is not None and len(report.feedback_type) <= 40
    long_envid = classify_report(dsn([block("a@example.net", "failed", "5.1.1")], envid="9" * 500))
    assert long_envid.envelope_id == "9" * 100


def test_our_own_subject_quoted_in_a_bounce_is_not_its_reason() -> None:
    raw = (
        "From: System Administrator <postmaster@mx.example.net>\n"
        f"To: <{VERP}>\nSubject: Undeliverable: Our new privacy policy\n\n"
        "Your message\n\n  To:      Anna\n"
        "  Subject: Our new privacy policy, and why spam is blocked\n"
        "  Sent:    Fri, 18 Oct 2002 09:25:07 -0600\n\n"
        "did not reach the following recipient(s):\n\n"
        "anna@example.net on Fri, 18 Oct 2002 09:13:24 -0600\n"
        "    The recipient name is not recognized\n"
        "    MSEXCH:IMS:EXAMPLE 0 (000C05A6) Unknown Recipient\n"
    ).encode()
    report = classify_report(raw)
    assert found(report) == {"anna@example.net"}
    # The recipient's own Exchange says it has no such mailbox; our subject's "spam is
    # blocked" is not read.
    assert report.kind is Kind.HARD and "no such user" in report.reason
    assert report.evidence == (
        'the bounce\'s words says "recipient name is not recognized";'
        " the recipient's own Exchange server wrote the report"
    )
