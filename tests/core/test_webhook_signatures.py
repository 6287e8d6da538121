"""Standard Webhooks signatures, checked by the reference library (`standardwebhooks`
from PyPI), which shares no code with mailer's."""

from __future__ import annotations

import json
import time
from uuid import UUID

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailer.core.webhooks.signatures import (
    batch_id,
    secret_bytes,
    secret_text,
    signature_header,
)

ENDPOINT = UUID("6a1d4f1c-0f5c-4a4f-9d0f-2f8a6c1b7e10")
BODY = json.dumps({"events": [{"id": "e1", "type": "message.delivered"}]}).encode()


def headers(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    keys = [secret_bytes(one) for one in secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, message_id, timestamp, body),
    }


def test_the_reference_library_accepts_the_signature_and_reads_the_body() -> None:
    secret = secret_text(bytes(range(32)))
    assert secret.startswith("whsec_")
    sent = headers([secret], batch_id(ENDPOINT, 0, 10, 42), int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, sent) == json.loads(BODY)


def test_during_a_rotation_a_receiver_holding_either_secret_accepts() -> None:
    old, new = secret_text(b"o" * 32), secret_text(b"n" * 32)
    sent = headers([new, old], "msg_1", int(time.time()), BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_text(b"x" * 32)).verify(BODY, sent)


@pytest.mark.parametrize("change", ["body", "id", "timestamp"])
def test_a_changed_body_id_or_timestamp_is_refused(change: str) -> None:
    secret = secret_text(b"k" * 32)
    now = int(time.time())
    sent = headers([secret], "msg_1", now, BODY)
    body = BODY
    if change == "body":
        body = BODY.replace(b"delivered", b"bounced")
    elif change == "id":
        sent["webhook-id"] = "msg_2"
    else:
        sent["webhook-timestamp"] = str(now - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, sent)


def test_a_retry_of_a_batch_has_its_id_and_a_replay_a_new_one() -> None:
    assert batch_id(ENDPOINT, 0, 10, 42) == batch_id(ENDPOINT, 0, 10, 42)
    assert batch_id(ENDPOINT, 1, 10, 42) != batch_id(ENDPOINT, 0, 10, 42)
    assert batch_id(ENDPOINT, 0, 42, 50) != batch_id(ENDPOINT, 0, 10, 50)


@pytest.mark.parametrize(
    "bad", ["", "whsec_", "whsec_!!!", "sk_" + "A" * 44, "whsec_" + "QUJD", "whsec_" + "A" * 200]
)
def test_what_is_not_a_secret_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        secret_bytes(bad)


def test_a_secret_has_24_to_64_random_bytes() -> None:
    with pytest.raises(ValueError, match="24 to 64"):
        secret_text(b"short")
    assert secret_bytes(secret_text(b"r" * 24)) == b"r" * 24
