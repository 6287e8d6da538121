"""A classified report as JSON: how a classifier process hands its Report to the service.

Pure: a Report in, bytes out, and back; what comes back is checked field by field, so a
reply that is not a Report raises ValueError.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from mailer.core.bounces.kinds import Kind, Recipient, Report, Source

_SOURCES: tuple[str, ...] = get_args(Source)


def report_to_json(report: Report) -> bytes:
    return json.dumps(
        {
            "kind": report.kind.value,
            "reason": report.reason,
            "source": report.source,
            "recipients": [
                [
                    one.address,
                    one.kind.value,
                    one.reason,
                    one.status,
                    one.action,
                    one.diagnostic,
                    one.evidence,
                    one.final_recipient,
                ]
                for one in report.recipients
            ],
            "tokens": list(report.return_path_tokens),
            "envelope_id": report.envelope_id,
            "feedback_type": report.feedback_type,
            "evidence": report.evidence,
        },
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass")


def report_from_json(data: bytes) -> Report:
    try:
        fields = json.loads(data.decode("utf-8", "surrogatepass"))
        source = fields["source"]
        if source not in _SOURCES:
            raise ValueError(f"unknown source {source!r}")
        return Report(
            Kind(fields["kind"]),
            _text(fields["reason"]),
            source,
            tuple(_recipient(one) for one in fields["recipients"]),
            tuple(_text(token) for token in fields["tokens"]),
            _optional(fields["envelope_id"]),
            _optional(fields["feedback_type"]),
            _optional(fields["evidence"]),
        )
    except (KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"not a classified report: {type(error).__name__}") from None


def _recipient(fields: Any) -> Recipient:
    address, kind, reason, status, action, diagnostic, evidence, final_recipient = fields
    return Recipient(
        _optional(address),
        Kind(kind),
        _text(reason),
        _optional(status),
        _optional(action),
        _optional(diagnostic),
        _optional(evidence),
        _optional(final_recipient),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _optional(value: Any) -> str | None:
    return None if value is None else _text(value)
