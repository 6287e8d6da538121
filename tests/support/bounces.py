"""Bounce reports as MTAs write them, and an SMTP client that sends them to the receiver."""

from __future__ import annotations

from dataclasses import dataclass

import aiosmtplib

BOUNCE_DOMAIN = "bounces.lucid.example"


def bounce_config(**overrides: object) -> dict[str, object]:
    """A [bounces] section for a test: the receiver on a free loopback port."""
    return {"domain": BOUNCE_DOMAIN, "listen": "127.0.0.1:0", **overrides}


def dsn(
    to: str,
    recipient: str,
    *,
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    action: str = "failed",
    envelope_id: str | None = None,
) -> bytes:
    """A multipart/report DSN to our return path `to`, as Postfix writes one."""
    envid = f"Original-Envelope-Id: {envelope_id}\n" if envelope_id else ""
    return f"""From: MAILER-DAEMON@mx.example.pl (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.pl
{envid}
Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic.format(rcpt=recipient)}

--B1
Content-Type: text/rfc822-headers

Return-Path: <{to}>
From: LucidOffice <no-reply@lucid.example>
To: <{recipient}>
Subject: Potwierdzenie

--B1--
""".replace("\n", "\r\n").encode()


def arf(to: str, recipient: str, *, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 complaint (feedback loop) about a message sent from `to`."""
    return f"""From: feedback@fbl.example.pl
To: {to}
Subject: Complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F1"

--F1
Content-Type: text/plain

This is an abuse report for a message received from your network.

--F1
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: fbl/1.0
Version: 1
Original-Mail-From: <{to}>
Original-Rcpt-To: <{recipient}>

--F1
Content-Type: text/rfc822-headers

Return-Path: <{to}>
From: Lucid News <news@lucid.example>
To: <{recipient}>

--F1--
""".replace("\n", "\r\n").encode()


@dataclass(frozen=True)
class Answer:
    stage: str  # the command refused, or "data" for the final answer
    code: int
    text: str


async def send_report(port: int, rcpt: str, raw: bytes, *, sender: str = "") -> Answer:
    """One transaction to the receiver; the answer that settled it."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await client.connect()
    try:
        try:
            await client.mail(sender)
        except aiosmtplib.SMTPResponseException as exc:
            return Answer("mail", exc.code, exc.message)
        try:
            await client.rcpt(rcpt)
        except aiosmtplib.SMTPResponseException as exc:
            return Answer("rcpt", exc.code, exc.message)
        try:
            reply = await client.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            return Answer("data", exc.code, exc.message)
        return Answer("data", reply.code, reply.message)
    finally:
        client.close()
