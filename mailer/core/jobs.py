"""① Decode: the bytes of a queue message become a typed job, or InvalidJob with the reason.

Schema version 1 of the contract. Everything that will reach a header is checked for control
characters here, every address is validated here, and attachments are decoded and measured
here, so the stages after this one work with values they can trust.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic_core import ErrorDetails

from mailer.core.addresses import (
    header_safe,
    mask_addresses,
    normalize_address,
    unsafe_for_header,
)
from mailer.core.locales import LOCALES, Locale, spoken
from mailer.errors import InvalidJob

KINDS = ("receipt", "newsletter", "subscription")
# A transactional message (a job of kind receipt) is a receipt, or, in the template that asks
# someone who subscribed to confirm (double opt-in), a confirmation: the ledger, the logs and
# the console call it so.
CONFIRM_TEMPLATE = "confirm"
Transactional = Literal["receipt", "confirmation"]
SCHEMA_VERSION = 1
TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MIME_NAME = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
CONTENT_TYPE = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}")
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SHOWN_CHARS = 40  # the longest key or value of a job a reason repeats


class _Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A text `pattern` matches whole, else the error says it `must be {what}`."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


HeaderText = Annotated[str, Field(max_length=256), AfterValidator(header_safe)]
ListSlug = Annotated[str, _matching(SLUG, "a list slug such as 'lucid-news'")]
ReceiptTemplate = Annotated[str, _matching(TEMPLATE_NAME, "a template name such as 'receipt'")]
NewsletterTemplate = Annotated[
    str, _matching(TEMPLATE_NAME, "a template name such as 'newsletter'")
]
# Validated and normalized (ASCII, IDN as punycode) on decode.
Address = Annotated[str, Field(max_length=320), AfterValidator(normalize_address)]


class Recipient(_Value):
    email: Address
    name: HeaderText | None = None


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


class Attachment(_Value):
    filename: HeaderText
    content_type: str
    content: Annotated[bytes, BeforeValidator(_base64)] = Field(alias="data_base64", repr=False)

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value.strip() or "/" in value or "\\" in value:
            raise ValueError("must be a plain file name")
        return value

    @field_validator("content_type")
    @classmethod
    def _mime(cls, value: str) -> str:
        if not CONTENT_TYPE.fullmatch(value):
            raise ValueError("must be a MIME type such as application/pdf")
        if value.lower().startswith(("multipart/", "message/")):
            raise ValueError("must be the type of a file, not multipart/* or message/*")
        return value.lower()

    @field_serializer("content")
    def _as_base64(self, content: bytes) -> str:
        return base64.b64encode(content).decode()


class ReceiptJob(_Value):
    kind: Literal["receipt"]
    version: Literal[1]
    id: UUID
    to: Recipient
    locale: Locale | None = None
    template: ReceiptTemplate = "receipt"
    data: dict[str, Any] = {}
    attachments: tuple[Attachment, ...] = ()

    @property
    def message_kind(self) -> Transactional:
        return "confirmation" if self.template == CONFIRM_TEMPLATE else "receipt"


def _subject(value: object) -> object:
    """A string, or a map from locale to string; checked here so that errors read well."""
    if isinstance(value, str):
        return header_safe(value)
    if not isinstance(value, dict) or not value:
        raise ValueError('must be a string or an object by locale, e.g. {"pl": …, "en": …}')
    unknown = sorted(set(value) - set(LOCALES))
    if unknown:
        raise ValueError(f"{_plain(unknown[0])} is not a locale ({spoken()})")
    for locale, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"{locale}: must be a string")
        value[locale] = header_safe(text)
    return value


class NewsletterJob(_Value):
    kind: Literal["newsletter"]
    version: Literal[1]
    id: UUID
    list: ListSlug
    subject: Annotated[str | dict[Locale, str], BeforeValidator(_subject)] = Field(
        union_mode="left_to_right"
    )
    template: NewsletterTemplate = "newsletter"
    data: dict[str, Any] = {}
    send_at: datetime | None = None

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-12-01T09:00:00+01:00")
        return value

    def subject_for(self, locale: Locale, fallback: Locale) -> str:
        if isinstance(self.subject, str):
            return self.subject
        return self.subject.get(locale) or self.subject[fallback]

    def data_for(self, locale: Locale, fallback: Locale) -> dict[str, Any]:
        """The template's data for readers in `locale`: `data`, or each article, may be an
        object by locale; what a locale lacks comes from `fallback` (the list's default)."""
        data = self.data
        if by_locale(data):
            data = data.get(locale) or data[fallback]
        articles = data.get("articles")
        if isinstance(articles, list) and any(by_locale(article) for article in articles):
            picked = [
                (article.get(locale) or article[fallback]) if by_locale(article) else article
                for article in articles
            ]
            data = {**data, "articles": picked}
        return data

    def lacking(self, fallback: Locale) -> str | None:
        """Where the job gives text by locale but not in `fallback`, else None."""
        if isinstance(self.subject, dict) and fallback not in self.subject:
            return "subject"
        parts: list[tuple[str, dict[str, Any]]] = []
        if by_locale(self.data):
            if fallback not in self.data:
                return "data"
            parts = [(f"data.{locale}", value) for locale, value in self.data.items()]
        else:
            parts = [("data", self.data)]
        for where, data in parts:
            articles = data.get("articles")
            if isinstance(articles, list):
                for index, article in enumerate(articles):
                    if by_locale(article) and fallback not in article:
                        return f"{where}.articles.{index}"
        return None


def by_locale(value: object) -> bool:
    """An object whose keys are all locales and whose values are objects: {"pl": {…}, …}."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(key in LOCALES and isinstance(part, dict) for key, part in value.items())
    )


class SubscriptionJob(_Value):
    kind: Literal["subscription"]
    version: Literal[1]
    id: UUID
    action: Literal["subscribe", "unsubscribe", "erase"]
    list: ListSlug | None = None
    email: Address
    name: HeaderText | None = None
    locale: Locale | None = None
    confirmed: bool = False


Job = ReceiptJob | NewsletterJob | SubscriptionJob
_MODELS: dict[str, type[ReceiptJob] | type[NewsletterJob] | type[SubscriptionJob]] = {
    "receipt": ReceiptJob,
    "newsletter": NewsletterJob,
    "subscription": SubscriptionJob,
}


MAX_DEPTH = 32  # objects and arrays within one another; a job needs fewer than ten
BODY_SLACK = 1024 * 1024  # what a job may hold besides its attachments' base64
_MAX_INTEGER_DIGITS = 30
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_INNERMOST = re.compile(rb"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MONEY = re.compile(r"-?\d{1,15}(?:\.\d{1,6})?")


def max_body_bytes(max_attachment_bytes: int) -> int:
    """The largest body a job may have: its attachments in base64, and room for the rest."""
    return max_attachment_bytes * 4 // 3 + BODY_SLACK


class _OutOfRange(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _OutOfRange(f"the number {text[:20]} is out of range")
    return value


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise _OutOfRange(f"the number {text[:20]}… has more than {_MAX_INTEGER_DIGITS} digits")
    return int(text)


def _too_deep(body: bytes) -> bool:
    """More than MAX_DEPTH containers within one another? Found without recursion: strings
    taken out, then the innermost containers removed a level at a time."""
    structure = _STRING.sub(b"", body)
    for _ in range(MAX_DEPTH):
        if _BRACKET.search(structure) is None:
            return False
        structure, removed = _INNERMOST.subn(b"", structure)
        if not removed:
            return False  # not JSON: the parser says where
    return _BRACKET.search(structure) is not None


def _repeatable(text: str) -> bool:
    """Whether a reason may repeat this key or value of a job: short, on one line, and
    without an @ (so never an address, whatever else the job put there)."""
    return len(text) <= SHOWN_CHARS and "@" not in text and not unsafe_for_header(text)


def _plain(value: object) -> str:
    """A key or value of the job as a reason shows it: quoted when repeatable, else only
    what kind of value it is."""
    if isinstance(value, str):
        return repr(value) if _repeatable(value) else "(a string, not shown)"
    if value is None or isinstance(value, bool | int):
        return repr(value)
    return f"(a {type(value).__name__})"


def _reason(error: ErrorDetails) -> str:
    """Where and what, never repeating the job's own text: a key in the path is shown only
    when repeatable, so an unknown field named `jan.kowalski@example.pl` is not."""
    loc = error["loc"]
    shown = [isinstance(part, int) or _repeatable(part) for part in loc]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and not shown[-1]:
        loc, shown = loc[:-1], shown[:-1]
        message = "has a field that is not part of this job (its name is not shown)"
    elif error["type"] == "extra_forbidden":
        message = "is not a field of this job"
    elif error["type"] == "missing":
        message = "is required"
    where = ".".join(str(part) if ok else "?" for part, ok in zip(loc, shown, strict=True))
    return f"{where or 'job'}: {mask_addresses(message)}"


def parse_json(body: bytes, max_bytes: int | None = None) -> dict[str, Any]:
    """Bytes → a JSON object, refusing before parsing what is too big or too deep, and
    numbers no job needs (NaN, Infinity, 1e100000, integers of more than 30 digits)."""
    if max_bytes is not None and len(body) > max_bytes:
        raise InvalidJob(f"body: {len(body)} bytes, more than the limit of {max_bytes}")
    if _too_deep(body):
        raise InvalidJob(f"body: nested deeper than {MAX_DEPTH} levels")
    try:
        raw = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite,
            parse_int=_integer,
        )
    except UnicodeDecodeError:
        raise InvalidJob("body is not UTF-8") from None
    except _OutOfRange as exc:
        raise InvalidJob(f"body: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidJob(f"body is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidJob("body is not a JSON object")
    if _SURROGATE_ESCAPE.search(body):
        try:  # a \ud800 escape alone decodes to a str that has no UTF-8
            json.dumps(raw, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidJob(
                "body: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
            ) from None
    return raw


def decode(body: bytes, *, max_attachment_bytes: int) -> Job:
    """Bytes from the queue → a job whose every field has been checked."""
    raw = parse_json(body, max_body_bytes(max_attachment_bytes))
    kind = raw.get("kind")
    if kind not in _MODELS:
        raise InvalidJob(f"kind: unknown kind {_plain(kind)}; expected one of {', '.join(KINDS)}")
    version = raw.get("version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidJob(
            f"version: {kind} jobs of version {_plain(version)} are not supported (1 is)"
        )
    try:
        job = _MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        raise InvalidJob(_reason(exc.errors(include_url=False, include_input=False)[0])) from None
    if isinstance(job, ReceiptJob):
        _check_receipt(job, max_attachment_bytes)
    elif isinstance(job, SubscriptionJob) and job.action != "erase" and job.list is None:
        raise InvalidJob(f"list: is required for {job.action}")
    return job


def _check_receipt(job: ReceiptJob, max_attachment_bytes: int) -> None:
    _check_money(job.data)
    total = sum(len(attachment.content) for attachment in job.attachments)
    if total > max_attachment_bytes:
        raise InvalidJob(
            f"attachments: {total} bytes, more than the limit of {max_attachment_bytes}"
        )


def _amount(where: str, value: object) -> None:
    if isinstance(value, bool | int | float):
        raise InvalidJob(f"{where}: {value!r} must be a decimal string, not a JSON number")
    if not isinstance(value, str) or not MONEY.fullmatch(value):
        raise InvalidJob(f'{where}: {_plain(value)} is not an amount such as "1476.00"')


def _number(where: str, value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**15:
        return
    if isinstance(value, float):
        raise InvalidJob(f"{where}: {value!r} must be an integer or a decimal string")
    if not isinstance(value, str) or not MONEY.fullmatch(value):
        raise InvalidJob(f'{where}: {_plain(value)} is not a number such as "23"')


def _check_money(data: dict[str, Any]) -> None:
    """The contract's amounts: decimal strings of sane size, never JSON numbers; its
    quantities and rates: integers or decimal strings of sane size."""
    if "total" in data:
        _amount("data.total", data["total"])
    items = data.get("items")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            if "unit_price" in item:
                _amount(f"data.items.{index}.unit_price", item["unit_price"])
            for key in ("quantity", "vat_rate"):
                if key in item:
                    _number(f"data.items.{index}.{key}", item[key])


def payload_digest(job: Job) -> bytes:
    """A digest of what the job asks for, insensitive to JSON key order and whitespace.

    Two publications with the same id and the same digest are the same job published twice;
    the same id with another digest is a conflict.
    """
    canonical = json.dumps(
        job.model_dump(mode="json", by_alias=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).digest()
