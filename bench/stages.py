"""Cost per message of each pure stage, and of the alternatives behind the same interface.

    .venv/bin/python -m bench.stages

Renders a receipt, composes it with the standard library's EmailMessage (what receipts used
before, kept here only to compare) and with mailer's own writer, and signs it with dkimpy's own
signer and with the OpenSSL one, side by side, on this machine, in one run.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime
from pathlib import Path

from bench.table import per_call, print_table
from mailer.core.jobs import decode
from mailer.core.messages import Draft, FileAttachment, Mailbox, compose
from mailer.core.rendering import Renderer
from mailer.core.signing import DkimpySigner, OpenSSLSigner, generate_key

ROOT = Path(__file__).resolve().parent.parent
_POLICY = default.clone(linesep="\r\n", max_line_length=78)


def stdlib_compose(draft: Draft) -> bytes:
    """The same message through EmailMessage and its header folding: the old receipt path."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = Address(draft.sender.name or "", *draft.sender.address.split("@"))
    msg["To"] = Address(draft.to.name or "", *draft.to.address.split("@"))
    msg["Subject"] = draft.content.subject
    msg["Date"] = format_datetime(draft.date)
    msg["Message-ID"] = draft.message_id
    msg.set_content(draft.content.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(draft.content.html, subtype="html", charset="utf-8", cte="quoted-printable")
    for a in draft.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return msg.as_bytes()


def main() -> None:
    renderer = Renderer(ROOT / "templates")
    body = (ROOT / "examples" / "receipt.json").read_bytes()
    job = decode(body, max_attachment_bytes=10 * 1024 * 1024)
    context = {**job.data, "to_name": "Jan Kowalski", "attachments": ["FV.pdf"]}  # type: ignore[union-attr]
    content = renderer.render("receipt", "pl", context)
    draft = Draft(
        sender=Mailbox("no-reply@lucid.example", "LucidOffice"),
        to=Mailbox("jan.kowalski@example.pl", "Jan Kowalski"),
        message_id="<x@lucid.example>",
        date=datetime.now(UTC),
        content=content,
        attachments=[FileAttachment("FV.pdf", "application/pdf", b"%PDF-1.4\n" * 50)],
    )
    plain = replace(draft, attachments=())  # newsletters carry none
    message = compose(draft)
    rsa = generate_key("rsa", domain="lucid.example", selector="r")
    ed = generate_key("ed25519", domain="lucid.example", selector="e")
    measured = [
        ("decode (JSON → typed job)", per_call(lambda: decode(body, max_attachment_bytes=10**7))),
        (
            "render receipt (pl, CSS inlined)",
            per_call(lambda: renderer.render("receipt", "pl", context)),
        ),
        ("compose receipt + PDF, stdlib email", per_call(lambda: stdlib_compose(draft))),
        ("compose receipt + PDF, mailer's writer", per_call(lambda: compose(draft))),
        ("compose no attachment, stdlib email", per_call(lambda: stdlib_compose(plain))),
        ("compose no attachment, mailer's writer", per_call(lambda: compose(plain))),
        ("sign RSA-2048, dkimpy", per_call(lambda: DkimpySigner([rsa]).sign(message, 0))),
        ("sign RSA-2048, OpenSSL", per_call(lambda: OpenSSLSigner([rsa]).sign(message, 0))),
        ("sign Ed25519, dkimpy", per_call(lambda: DkimpySigner([ed]).sign(message, 0))),
        ("sign Ed25519, OpenSSL", per_call(lambda: OpenSSLSigner([ed]).sign(message, 0))),
        (
            "sign RSA + Ed25519, OpenSSL",
            per_call(lambda: OpenSSLSigner([rsa, ed]).sign(message, 0)),
        ),
    ]
    baseline = dict(measured)["sign RSA-2048, dkimpy"]
    print_table(
        f"Per message, one core ({len(message)} byte receipt)",
        ["stage", "µs", "messages/s", "vs dkimpy RSA"],
        [
            (name, f"{t * 1e6:,.0f}", f"{1 / t:,.0f}", f"{baseline / t:,.1f}x")
            for name, t in measured
        ],
    )


if __name__ == "__main__":
    main()
