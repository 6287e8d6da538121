"""Job payloads as the portal would publish them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

PDF = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)


def receipt(**overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "kind": "receipt",
        "version": 1,
        "id": str(uuid.uuid4()),
        "to": {"email": "jan.kowalski@example.pl", "name": "Jan Kowalski"},
        "locale": "pl",
        "template": "receipt",
        "data": {
            "order_number": "ZAM/2026/11/0042",
            "placed_at": "2026-11-24T10:15:00+01:00",
            "currency": "PLN",
            "items": [
                {
                    "name": "LucidCRM — licencja roczna",
                    "quantity": 1,
                    "unit_price": "1200.00",
                    "vat_rate": "23",
                }
            ],
            "total": "1476.00",
        },
        "attachments": [
            {
                "filename": "FV-2026-11-0042.pdf",
                "content_type": "application/pdf",
                "data_base64": base64.b64encode(PDF).decode(),
            }
        ],
    }
    job.update(overrides)
    return job


def encode(job: dict[str, Any]) -> bytes:
    return json.dumps(job, ensure_ascii=False).encode()
