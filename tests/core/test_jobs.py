from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mailer.core.jobs import (
    MAX_DEPTH,
    NewsletterJob,
    ReceiptJob,
    SubscriptionJob,
    decode,
    max_body_bytes,
    payload_digest,
)
from mailer.errors import InvalidJob
from tests.support.jobs import PDF, encode, receipt

LIMIT = 10 * 1024 * 1024


def decode_receipt(job: dict[str, Any]) -> ReceiptJob:
    decoded = decode(encode(job), max_attachment_bytes=LIMIT)
    assert isinstance(decoded, ReceiptJob)
    return decoded


def reason_for(body: bytes, limit: int = LIMIT) -> str:
    with pytest.raises(InvalidJob) as caught:
        decode(body, max_attachment_bytes=limit)
    return caught.value.reason


def test_a_receipt_decodes_into_typed_values() -> None:
    job = decode_receipt(receipt(to={"email": "Jan.Kowalski@EXAMPLE.pl", "name": "Jan Kowalski"}))
    assert job.to.email == "Jan.Kowalski@example.pl"  # domain normalized, local part kept
    assert job.to.name == "Jan Kowalski"
    assert job.locale == "pl"
    assert job.attachments[0].content == PDF
    assert job.attachments[0].filename == "FV-2026-11-0042.pdf"


def test_defaults_template_and_no_locale() -> None:
    body = receipt()
    del body["template"], body["locale"], body["attachments"]
    job = decode_receipt(body)
    assert job.template == "receipt"
    assert job.locale is None
    assert job.attachments == ()


def test_an_idn_domain_becomes_punycode() -> None:
    job = decode_receipt(receipt(to={"email": "anna@łódź.pl"}))
    assert job.to.email == "anna@xn--d-uga0v4h.pl"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff\xfe", "body is not UTF-8"),
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'{"kind": "receipt", "version": 1, "id": NaN}', "body is not JSON"),
        (encode({"kind": "invoice", "version": 1}), "kind: unknown kind 'invoice'"),
        (encode({"version": 1}), "kind: unknown kind"),
        (encode(receipt(version=2)), "version: receipt jobs of version 2 are not supported"),
        (encode(receipt(version=True)), "version: receipt jobs of version True"),
        (encode(receipt(id="not-a-uuid")), "id: Input should be a valid UUID"),
        (encode(receipt(locale="de")), "locale: Input should be 'pl' or 'en'"),
        (encode(receipt(template="../etc/passwd")), "template: must be a template name"),
        (encode(receipt(to={"name": "Jan"})), "to.email: is required"),
        (encode(receipt(extra=1)), "extra: is not a field of this job"),
        (encode(receipt(data=[1])), "data: Input should be a valid dictionary"),
    ],
)
def test_invalid_jobs_are_refused_with_the_reason(body: bytes, expected: str) -> None:
    assert expected in reason_for(body)


@pytest.mark.parametrize(
    "address",
    ["jan.kowalski", "jan@", "jan@@example.pl", "jan kowalski@example.pl", "ján@example.pl"],
)
def test_invalid_addresses_are_refused_without_repeating_them(address: str) -> None:
    reason = reason_for(encode(receipt(to={"email": address})))
    assert reason.startswith("to.email: not a valid e-mail address")
    assert address not in reason


@pytest.mark.parametrize("evil", ["Jan\r\nBcc: all@example.pl", "Jan\nX", "Jan\x00", "Jan\u2028"])
def test_header_injection_in_a_name_is_refused(evil: str) -> None:
    reason = reason_for(encode(receipt(to={"email": "jan@example.pl", "name": evil})))
    assert reason == "to.name: contains a line break or control character"


def test_header_injection_in_an_address_is_refused() -> None:
    reason = reason_for(encode(receipt(to={"email": "jan@example.pl\r\nBcc: x@example.pl"})))
    assert reason.startswith("to.email:")


@pytest.mark.parametrize(
    ("attachment", "expected"),
    [
        (
            {"filename": "a.pdf", "content_type": "application/pdf", "data_base64": "%%%"},
            "attachments.0.data_base64: is not valid base64",
        ),
        (
            {"filename": "../a.pdf", "content_type": "application/pdf", "data_base64": ""},
            "attachments.0.filename: must be a plain file name",
        ),
        (
            {"filename": "a.pdf\r\nX: y", "content_type": "application/pdf", "data_base64": ""},
            "attachments.0.filename: contains a line break",
        ),
        (
            {"filename": "a.pdf", "content_type": "pdf", "data_base64": ""},
            "attachments.0.content_type: must be a MIME type",
        ),
        (
            {"filename": "a.pdf", "content_type": "application/pdf"},
            "attachments.0.data_base64: is required",
        ),
    ],
)
def test_bad_attachments_are_refused(attachment: dict[str, str], expected: str) -> None:
    assert expected in reason_for(encode(receipt(attachments=[attachment])))


def test_attachments_over_the_limit_are_refused() -> None:
    content = base64.b64encode(b"x" * 600).decode()
    two = [
        {"filename": f"{i}.bin", "content_type": "application/octet-stream", "data_base64": content}
        for i in range(2)
    ]
    assert decode_receipt(receipt(attachments=two[:1]))  # under the limit passes
    reason = reason_for(encode(receipt(attachments=two)), limit=1000)
    assert reason == "attachments: 1200 bytes, more than the limit of 1000"


def test_digest_ignores_key_order_and_whitespace_but_not_content() -> None:
    job = receipt()
    reordered = json.dumps(dict(reversed(list(job.items()))), indent=2).encode()
    first = decode(encode(job), max_attachment_bytes=LIMIT)
    second = decode(reordered, max_attachment_bytes=LIMIT)
    changed = decode(encode({**job, "locale": "en"}), max_attachment_bytes=LIMIT)
    assert payload_digest(first) == payload_digest(second)
    assert payload_digest(first) != payload_digest(changed)


def test_newsletter_and_subscription_jobs_decode() -> None:
    newsletter = decode(
        encode(
            {
                "kind": "newsletter",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
                "list": "lucid-news",
                "subject": {"pl": "Nowości", "en": "News"},
                "data": {"articles": []},
                "send_at": "2026-12-01T09:00:00+01:00",
            }
        ),
        max_attachment_bytes=LIMIT,
    )
    assert isinstance(newsletter, NewsletterJob)
    assert newsletter.subject_for("en", "pl") == "News"
    subscription = decode(
        encode(
            {
                "kind": "subscription",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c12",
                "action": "subscribe",
                "list": "lucid-news",
                "email": "anna@example.pl",
                "confirmed": True,
            }
        ),
        max_attachment_bytes=LIMIT,
    )
    assert isinstance(subscription, SubscriptionJob)
    assert subscription.confirmed is True


def test_send_at_needs_an_offset() -> None:
    reason = reason_for(
        encode(
            {
                "kind": "newsletter",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
                "list": "lucid-news",
                "subject": "x",
                "send_at": "2026-12-01T09:00:00",
            }
        )
    )
    assert reason.startswith("send_at: must carry a UTC offset")


def test_subscribe_needs_a_list() -> None:
    reason = reason_for(
        encode(
            {
                "kind": "subscription",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
                "action": "subscribe",
                "email": "anna@example.pl",
            }
        )
    )
    assert reason == "list: is required for subscribe"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"list": "Lucid News"}, "list: must be a list slug"),
        ({"template": "News!"}, "template: must be a template name"),
        ({"subject": {"de": "x"}}, "subject: 'de' is not a locale (pl or en)"),
        ({"subject": {"jan.private@example.pl": "x"}}, "subject: (a string, not shown) is not a"),
        ({"subject": 5}, "subject: must be a string or an object by locale"),
        ({"subject": {"pl": "a\nb"}}, "subject: contains a line break"),
    ],
)
def test_newsletter_fields_are_checked(changes: dict[str, object], expected: str) -> None:
    job = {
        "kind": "newsletter",
        "version": 1,
        "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
        "list": "lucid-news",
        "subject": "x",
        **changes,
    }
    assert expected in reason_for(encode(job))


def test_subject_for_falls_back_to_the_lists_locale() -> None:
    job = decode(
        encode(
            {
                "kind": "newsletter",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
                "list": "lucid-news",
                "subject": {"pl": "Nowości"},
            }
        ),
        max_attachment_bytes=LIMIT,
    )
    assert isinstance(job, NewsletterJob)
    assert job.subject_for("en", "pl") == "Nowości"
    plain = job.model_copy(update={"subject": "Same"})
    assert plain.subject_for("en", "pl") == "Same"


def test_attachment_data_must_be_a_string() -> None:
    bad = {"filename": "a.pdf", "content_type": "application/pdf", "data_base64": 5}
    assert "must be a base64 string" in reason_for(encode(receipt(attachments=[bad])))


def test_a_subscription_list_must_be_a_slug() -> None:
    assert "list: must be a list slug" in reason_for(
        encode(
            {
                "kind": "subscription",
                "version": 1,
                "id": "0e9b7d8c-1c55-4f0a-b7b5-0d6f3a2b9c11",
                "action": "unsubscribe",
                "list": "NO",
                "email": "a@example.pl",
            }
        )
    )


def _nested(depth: int) -> bytes:
    job = receipt()
    job["data"]["notes"] = "@"
    return encode(job).replace(b'"@"', b"[" * depth + b"]" * depth)


def _receipt_with(old: bytes, new: bytes) -> bytes:
    body = encode(receipt())
    assert old in body
    return body.replace(old, new)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_nested(1_000_000), "body: nested deeper than 32 levels"),
        (_nested(31), "body: nested deeper than 32 levels"),  # 33 with the job and data
        (b"[" * 40 + b"]" * 40, "body: nested deeper than 32 levels"),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', "kind: unknown kind"),
        (b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', "kind: unknown kind"),
        (b"{" * 40, "body is not JSON"),
        (_receipt_with(b'"total": "1476.00"', b'"total": 1e100000'), "body: the number 1e100000"),
        (_receipt_with(b'"total": "1476.00"', b'"total": -1e400'), "body: the number -1e400 is"),
        (_receipt_with(b'"total": "1476.00"', b'"total": Infinity'), "body is not JSON (Infin"),
        (_receipt_with(b'"quantity": 1', b'"quantity": 1' + b"0" * 5000), "has more than 30"),
        (
            _receipt_with(b'"total": "1476.00"', b'"total": 1476.0'),
            "data.total: 1476.0 must be a decimal string, not a JSON number",
        ),
        (
            _receipt_with(b'"total": "1476.00"', b'"total": 1476'),
            "data.total: 1476 must be a decimal string, not a JSON number",
        ),
        (
            _receipt_with(b'"total": "1476.00"', b'"total": "1e100000"'),
            "data.total: '1e100000' is not an amount",
        ),
        (
            _receipt_with(b'"unit_price": "1200.00"', b'"unit_price": "NaN"'),
            "data.items.0.unit_price: 'NaN' is not an amount",
        ),
        (
            _receipt_with(b'"unit_price": "1200.00"', b'"unit_price": 12.5'),
            "data.items.0.unit_price: 12.5 must be a decimal string",
        ),
        (
            _receipt_with(b'"quantity": 1', b'"quantity": "1e100000"'),
            "data.items.0.quantity: '1e100000' is not a number",
        ),
        (
            _receipt_with(b'"quantity": 1', b'"quantity": 10000000000000000'),
            "data.items.0.quantity: 10000000000000000 is not a number",
        ),
        (
            _receipt_with(b'"quantity": 1', b'"quantity": 1.5'),
            "data.items.0.quantity: 1.5 must be an integer or a decimal string",
        ),
        (
            _receipt_with(b'"vat_rate": "23"', b'"vat_rate": "1e999999999"'),
            "data.items.0.vat_rate: '1e999999999' is not a number",
        ),
    ],
)
def test_hostile_json_is_an_invalid_job_with_the_reason(body: bytes, expected: str) -> None:
    assert expected in reason_for(body)


@pytest.mark.parametrize("escaped", [b"\\ud800", b"x\\udfffy", b"\\uD83D", b"\\ude00\\ud83d"])
def test_a_lone_surrogate_anywhere_is_refused(escaped: bytes) -> None:
    body = encode(receipt(data={**receipt()["data"], "note": "@"})).replace(b"@", escaped)
    assert reason_for(body) == "body: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"


def test_a_surrogate_pair_is_a_character() -> None:
    body = encode(receipt(to={"email": "a@example.pl", "name": "@"}))
    assert decode_receipt(json.loads(body.replace(b'@"', b'\\ud83d\\ude00"'))).to.name == "😀"


def test_sane_numbers_pass() -> None:
    body = _receipt_with(b'"quantity": 1', b'"quantity": "2.5"').replace(b'"23"', b"8")
    assert decode_receipt(json.loads(body)).data["items"][0]["vat_rate"] == 8
    job = receipt()
    job["data"]["items"].append("not an object")  # left to the template to refuse
    assert decode_receipt(job)


def test_a_job_as_deep_as_the_limit_decodes() -> None:
    assert decode_receipt(json.loads(_nested(MAX_DEPTH - 2)))  # the job and data: 2 levels


def test_a_body_over_the_cap_is_refused_before_parsing() -> None:
    limit = 3000
    cap = max_body_bytes(limit)
    assert cap == limit * 4 // 3 + 1024 * 1024
    body = b"{" * (cap + 1)  # never parsed: it would be "not JSON"
    assert reason_for(body, limit=limit) == f"body: {cap + 1} bytes, more than the limit of {cap}"
    padded = encode(receipt(data={**receipt()["data"], "pad": "x" * (cap - 2000)}))
    assert len(padded) <= cap
    assert decode(padded, max_attachment_bytes=limit)


@pytest.mark.parametrize("content_type", ["multipart/mixed", "message/rfc822", "Multipart/Related"])
def test_an_attachment_cannot_be_a_structured_type(content_type: str) -> None:
    attachment = {"filename": "a.eml", "content_type": content_type, "data_base64": ""}
    reason = reason_for(encode(receipt(attachments=[attachment])))
    assert reason.startswith("attachments.0.content_type: must be the type of a file")


PRIVATE = "jan.private@example.pl"


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            receipt(to={"email": "a@example.pl", PRIVATE: "x"}),
            "to: has a field that is not part of this job (its name is not shown)",
        ),
        (
            {**receipt(), f"{PRIVATE}\n": 1},
            "job: has a field that is not part of this job (its name is not shown)",
        ),
        ({**receipt(), "kind": PRIVATE}, "kind: unknown kind (a string, not shown);"),
        ({**receipt(), "version": PRIVATE}, "version: receipt jobs of version (a string, not "),
        ({**receipt(), "version": [PRIVATE]}, "version: receipt jobs of version (a list) are "),
        (
            receipt(data={**receipt()["data"], "total": PRIVATE}),
            'data.total: (a string, not shown) is not an amount such as "1476.00"',
        ),
        (
            receipt(data={"items": [{"quantity": PRIVATE}]}),
            'data.items.0.quantity: (a string, not shown) is not a number such as "23"',
        ),
    ],
)
def test_a_reason_never_repeats_what_could_be_an_address(
    job: dict[str, Any], expected: str
) -> None:
    """A reason is shown to operators and logged: it names the field, and repeats a key or
    value of the job only when it is short, on one line and has no @."""
    reason = reason_for(encode(job))
    assert reason.startswith(expected), reason
    assert "@" not in reason


def test_a_plain_unknown_key_or_value_is_still_named() -> None:
    assert (
        reason_for(encode({**receipt(), "surprise": 1})) == "surprise: is not a field of this job"
    )
    assert reason_for(encode({**receipt(), "kind": "fax"})).startswith("kind: unknown kind 'fax';")
    total = reason_for(encode(receipt(data={**receipt()["data"], "total": "12,50"})))
    assert total == "data.total: '12,50' is not an amount such as \"1476.00\""
