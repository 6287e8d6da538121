"""The readers of reports that are not plain DSNs, over built samples written as the MTAs
and ESPs write them: bounces in prose (qmail, Exim, DragonFly Mail Agent, Google Groups),
ESP notifications forwarded by mail (Amazon SES, also inside SNS; SendGrid; Mailgun), and
complaints (ARF opt-out, Hotmail's, a mail client's unsubscribe request). Each names the
evidence that decided it."""

from __future__ import annotations

import json

import pytest

from mailer.core.bounces.kinds import Kind, Report
from mailer.core.bounces.reports import classify_report
from mailer.core.outcomes import Failed, Reply, Retry, classify

VERP = "b-" + "a" * 37 + "@bounces.lucid.example"
JAN = "jan.kowalski@example.pl"


def only(report: Report) -> tuple[str | None, Kind]:
    (one,) = report.recipients
    return one.address, one.kind


def prose(subject: str, body: str, sender: str = "MAILER-DAEMON@mx.example.net") -> bytes:
    return f"From: {sender}\nTo: <{VERP}>\nSubject: {subject}\n\n{body}\n".encode()


# ---------------------------------------------------------------- bounces in prose


QMAIL = """Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{rcpt}>:
{reason}

--- Below this line is a copy of the message.

Return-Path: <{verp}>
From: Lucid <news@lucid.example>
"""
EXIM = """This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {rcpt}
    SMTP error from remote mail server after {command}:
    host mx.example.pl [192.0.2.20]: {reply}

------ This is a copy of the message, including all the headers. ------
"""
DMA = """This is the DragonFly Mail Agent v0.13 at df.example.net.

There was an error delivering your mail to <{rcpt}>.

{reason}

Message headers follow.
"""


@pytest.mark.parametrize(
    ("body", "kind", "evidence"),
    [
        # qmail's own local delivery: the recipient's system says it has no such mailbox.
        (
            QMAIL.format(
                rcpt=JAN, verp=VERP, reason="Sorry, no mailbox here by that name. (#5.1.1)"
            ),
            Kind.HARD,
            '"no mailbox here"',
        ),
        # qmail remote: the command refused is named ("does not like recipient").
        (
            QMAIL.format(
                rcpt=JAN,
                verp=VERP,
                reason="192.0.2.1 does not like recipient.\nRemote host said: 550 No such user",
            ),
            Kind.HARD,
            "in reply to RCPT TO",
        ),
        # Exim without an enhanced code, in reply to RCPT TO.
        (
            EXIM.format(rcpt=JAN, command=f"RCPT TO:<{JAN}>", reply="550 No such user"),
            Kind.HARD,
            '"no such user", in reply to RCPT TO',
        ),
        # Refused at MAIL FROM: the server refused us, whatever it says of a user.
        (
            EXIM.format(
                rcpt=JAN, command="MAIL FROM:<news@lucid.example>", reply="550 5.1.1 User unknown"
            ),
            Kind.POLICY,
            "in reply to MAIL FROM",
        ),
        # Exim "550 blocked" without an enhanced code: our IP, not the recipient.
        (
            EXIM.format(rcpt=JAN, command=f"RCPT TO:<{JAN}>", reply="550 blocked"),
            Kind.POLICY,
            '"blocked"',
        ),
        # "Unknown" only after DATA: a filter's answer, not a directory's.
        (
            EXIM.format(rcpt=JAN, command="end of data", reply="550 Unknown user"),
            Kind.SOFT,
            "in reply to DATA",
        ),
        (
            DMA.format(
                rcpt=JAN,
                reason="mx.example.pl [192.0.2.25] did not like our RCPT TO:\n"
                f"550 5.1.1 <{JAN}>: Recipient address rejected: User unknown",
            ),
            Kind.HARD,
            "in reply to RCPT TO",
        ),
        (
            DMA.format(rcpt=JAN, reason="DNS lookup failure: host example.pl not found"),
            Kind.HARD,
            "the reporter's DNS found no such host",
        ),
        (
            DMA.format(
                rcpt=JAN,
                reason="mx.example.pl [192.0.2.25] did not like our final DATA:\n"
                "550 5.7.26 Unauthenticated email from lucid.example is not accepted due to"
                " domain's DMARC policy",
            ),
            Kind.POLICY,
            '"unauthenticated"',
        ),
        (
            DMA.format(
                rcpt=JAN, reason="Could not deliver for the last 432000 seconds. Giving up."
            ),
            Kind.SOFT,
            '"could not deliver for the last"',
        ),
    ],
    ids=[
        "qmail local",
        "qmail remote",
        "exim rcpt",
        "exim mail from",
        "exim blocked",
        "exim after data",
        "dma rcpt",
        "dma dns",
        "dma dmarc",
        "dma expired",
    ],
)
def test_a_bounce_in_prose_is_judged_by_its_words_and_the_command(
    body: str, kind: Kind, evidence: str
) -> None:
    report = classify_report(prose("Mail delivery failed", body))
    assert report.source == "non-standard"
    assert only(report) == (JAN, kind), report.reason
    assert report.evidence is not None and evidence in report.evidence


def test_a_google_groups_refusal_is_our_post_refused_not_a_missing_address() -> None:
    body = (
        f"Hello {VERP},\n\nWe're writing to let you know that the group you tried to contact"
        " (lucid-news) may not exist, or you may not have permission to post messages to the"
        " group.\n\nIf you have questions, visit https://groups.google.com/support/.\n"
    )
    raw = prose("Delivery Status Notification (Failure)", body, "mailer-daemon@googlemail.com")
    raw = raw.replace(b"To: <", b"X-Failed-Recipients: lucid-news@googlegroups.com\nTo: <")
    report = classify_report(raw.replace(b"(lucid-news)", b"(lucid-news@googlegroups.com)"))
    assert report.kind is Kind.POLICY
    assert report.evidence is not None and "Google Groups" in report.evidence


def test_a_delay_warning_in_prose_is_ignored() -> None:
    body = EXIM.format(rcpt=JAN, command=f"RCPT TO:<{JAN}>", reply="451 4.7.1 Try later")
    body = body.replace("This is a permanent error. ", "").replace(
        "could not be delivered", "has not yet been delivered"
    )
    report = classify_report(prose("Warning: message 1AbC delayed 24 hours", body))
    assert only(report) == (JAN, Kind.IGNORED)


# ---------------------------------------------------------------- ESP notifications


def notification(body: object, sender: str = "no-reply@sns.amazonaws.com") -> bytes:
    return (
        f"From: {sender}\nTo: <{VERP}>\nSubject: AWS Notification Message\n"
        f"Content-Type: text/plain; charset=UTF-8\n\n{json.dumps(body)}\n"
    ).encode()


SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": JAN,
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
    },
    "mail": {"source": VERP},
}


def test_an_ses_bounce_notification_is_read_as_a_dsn_is() -> None:
    report = classify_report(notification(SES_BOUNCE))
    assert (report.source, only(report)) == ("notification", (JAN, Kind.HARD))
    assert report.evidence is not None and "SES bounceType: Permanent/General" in report.evidence
    assert report.return_path_token == "a" * 37


def test_an_ses_notification_inside_an_sns_envelope_is_read_too() -> None:
    envelope = {"Type": "Notification", "Message": json.dumps(SES_BOUNCE)}
    assert only(classify_report(notification(envelope))) == (JAN, Kind.HARD)


def test_a_transient_ses_bounce_is_a_delay_and_a_complaint_is_a_complaint() -> None:
    transient = json.loads(json.dumps(SES_BOUNCE))
    transient["bounce"]["bounceType"] = "Transient"
    transient["bounce"]["bouncedRecipients"][0]["status"] = "4.2.2"
    assert only(classify_report(notification(transient))) == (JAN, Kind.IGNORED)
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": JAN}]},
    }
    assert only(classify_report(notification(complaint))) == (JAN, Kind.COMPLAINT)


def test_a_notification_on_a_line_longer_than_other_lines_may_be_is_read_whole() -> None:
    """SES puts the returned message's headers in the JSON: one line of 10 KB here, past
    the 2,000 bytes at which the lines of prose are cut."""
    long = json.loads(json.dumps(SES_BOUNCE))
    long["mail"]["headers"] = [{"name": f"X-H{n}", "value": "v" * 80} for n in range(100)]
    raw = notification(long)
    assert max(map(len, raw.split(b"\n"))) > 10_000
    assert only(classify_report(raw)) == (JAN, Kind.HARD)


def test_a_json_line_sendmail_broke_is_mended() -> None:
    """sendmail breaks a line over 990 characters with "!", a line end and a space."""
    raw = notification(SES_BOUNCE).replace(b'"action"', b'"ac!\n tion"')
    assert only(classify_report(raw)) == (JAN, Kind.HARD)


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (
            {
                "event": "bounce",
                "email": JAN,
                "status": "5.1.1",
                "reason": "550 5.1.1 user unknown",
                "type": "bounce",
            },
            Kind.HARD,
        ),
        (
            {
                "event": "bounce",
                "email": JAN,
                "status": "5.7.1",
                "reason": "550 5.7.1 blocked using zen.spamhaus.org",
                "type": "blocked",
            },
            Kind.POLICY,
        ),
        ({"event": "spamreport", "email": JAN}, Kind.COMPLAINT),
        ({"event": "unsubscribe", "email": JAN}, Kind.COMPLAINT),
        ({"event": "deferred", "email": JAN}, Kind.IGNORED),
    ],
    ids=["bounce", "blocked", "spam report", "unsubscribe", "deferred"],
)
def test_sendgrid_events(event: dict[str, str], kind: Kind) -> None:
    report = classify_report(notification([event], "relay@sendgrid.example"))
    assert only(report) == (JAN, kind)
    assert report.evidence is not None and "SendGrid event" in report.evidence


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (
            {
                "event": "failed",
                "severity": "permanent",
                "recipient": JAN,
                "delivery-status": {"code": 550, "message": "5.1.1 No such user"},
            },
            Kind.HARD,
        ),
        (
            {
                "event": "failed",
                "severity": "permanent",
                "recipient": JAN,
                "delivery-status": {"code": 552, "message": "5.2.2 Mailbox full"},
            },
            Kind.SOFT,
        ),
        (
            {
                "event": "failed",
                "severity": "temporary",
                "recipient": JAN,
                "delivery-status": {"code": 451, "message": "4.7.1 greylisted"},
            },
            Kind.IGNORED,
        ),
        ({"event": "complained", "recipient": JAN}, Kind.COMPLAINT),
    ],
    ids=["permanent", "full", "temporary", "complained"],
)
def test_mailgun_events(event: dict[str, object], kind: Kind) -> None:
    body = {"signature": {"token": "t"}, "event-data": event}
    report = classify_report(notification(body, "relay@mailgun.example"))
    assert only(report) == (JAN, kind)
    assert report.evidence is not None and "Mailgun event" in report.evidence


# ---------------------------------------------------------------- complaints


def test_an_arf_opt_out_unsubscribes_as_a_complaint_does() -> None:
    raw = f"""From: <fbl@isp.example>
To: <{VERP}>
Subject: FW: November
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="p"

--p
Content-Type: text/plain

This is an opt-out report.

--p
Content-Type: message/feedback-report

Feedback-Type: opt-out
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <{JAN}>

--p
Content-Type: text/rfc822-headers

Return-Path: <{VERP}>
To: <{JAN}>

--p--
""".encode()
    report = classify_report(raw)
    assert (report.kind, report.feedback_type, report.evidence) == (
        Kind.COMPLAINT,
        "opt-out",
        "Feedback-Type: opt-out",
    )
    assert only(report) == (JAN, Kind.COMPLAINT)


def test_a_hotmail_complaint_without_a_feedback_report_is_a_complaint() -> None:
    raw = f"""From: staff@hotmail.com
To: <{VERP}>
Subject: complaint about message from 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="h"

--h
Content-Type: message/rfc822

X-HmXmrOriginalRecipient: {JAN}
Return-Path: <{VERP}>
To: <{JAN}>
Subject: November

News.
--h--
""".encode()
    report = classify_report(raw)
    assert only(report) == (JAN, Kind.COMPLAINT)
    assert report.evidence is not None and "Hotmail" in report.evidence


def test_an_unsubscribe_request_from_a_mail_client_is_a_complaint() -> None:
    raw = (
        f"From: {JAN}\nTo: <{VERP}>\nSubject: unsubscribe\nX-Apple-Unsubscribe: true\n\n"
        "Apple Mail sent this email to unsubscribe from the message.\n"
    ).encode()
    report = classify_report(raw)
    assert only(report) == (JAN, Kind.COMPLAINT)
    assert report.evidence == "X-Apple-Unsubscribe: true"


# ---------------------------------------------------------------- in session, the same rules


@pytest.mark.parametrize(
    ("reply", "suppress"),
    [
        (Reply(550, "No such user here", stage="rcpt"), True),  # Exim, no enhanced code
        (
            Reply(
                550, "5.1.1 <x@example.pl>: Recipient address rejected: over quota", stage="rcpt"
            ),
            False,
        ),
        (Reply(550, "5.1.1 Your IP 192.0.2.1 is listed at zen.spamhaus.org", stage="rcpt"), False),
        (Reply(550, "No such user here", stage="data"), False),
    ],
    ids=["unknown at rcpt", "full with 5.1.1", "listed with 5.1.1", "unknown after data"],
)
def test_a_reply_in_session_is_judged_by_the_same_phrases(reply: Reply, suppress: bool) -> None:
    outcome = classify(reply)
    assert isinstance(outcome, Failed) and not isinstance(outcome, Retry)
    assert outcome.suppress is suppress
