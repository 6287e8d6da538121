"""④ Render: a template, a locale and data become a subject, an HTML part and a text part.

Templates live in `templates/<name>/<locale>/{subject.txt.j2, body.html.j2, body.txt.j2}` and
extend the shared layouts in `templates/_layout/`. They are compiled once, when the Renderer
is built. Every template is autoescaped unless its name ends in `.txt.j2`; an undefined value
is an error, never an empty hole in a receipt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import css_inline
import jinja2
import nh3
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from markupsafe import Markup, escape

from mailer.core.addresses import mask_addresses, unsafe_for_header
from mailer.core.locales import LOCALES, Locale
from mailer.errors import InvalidJob

BABEL_LOCALES: dict[Locale, str] = {"pl": "pl_PL", "en": "en_GB"}
PARTS = ("subject.txt.j2", "body.html.j2", "body.txt.j2")

# Staff HTML in newsletters: what a newsletter article may contain.
_ALLOWED_STYLE = frozenset(
    {
        "color",
        "background-color",
        "font-weight",
        "font-style",
        "text-align",
        "text-decoration",
        "font-size",
        "line-height",
        "margin",
        "padding",
        "width",
        "max-width",
        "height",
        "border",
    }
)
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["relaxed"], display_links=True)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt.j2")


def sanitize_html(html: str) -> str:
    """Staff-authored HTML made safe to send: no scripts, handlers, forms or odd URLs."""
    return nh3.clean(
        html,
        url_schemes=set(_URL_SCHEMES),
        attributes={**nh3.ALLOWED_ATTRIBUTES, "*": {"style", "title", "lang", "dir"}},
        filter_style_properties=set(_ALLOWED_STYLE),
        link_rel="noopener noreferrer",
    )


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of (sanitized) HTML, links kept as URLs."""
    text = get_text(str(html), _TEXT_CONFIG)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class Renderer:
    """Compiled templates for every name and locale, with locale-aware filters."""

    def __init__(self, templates_dir: Path) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir)),
            autoescape=_autoescape,  # noqa: S701 - on for every template but *.txt.j2
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(
            money=_money,
            date=_date,
            datetime=_datetime,
            number=_number,
            percent=_percent,
            text=html_to_text,
            staff_html=_staff_html,
            url=_url,
        )
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
        self._compiled: dict[tuple[str, Locale], tuple[jinja2.Template, ...]] = {}
        names = (
            sorted(
                p.name for p in templates_dir.iterdir() if p.is_dir() and not p.name.startswith("_")
            )
            if templates_dir.is_dir()
            else []
        )
        for name in names:
            for locale in LOCALES:
                try:
                    self._compiled[(name, locale)] = tuple(
                        self._env.get_template(f"{name}/{locale}/{part}") for part in PARTS
                    )
                except jinja2.TemplateNotFound as exc:
                    raise ValueError(f"template {name!r} lacks {exc.name}") from None
                except jinja2.TemplateSyntaxError as exc:
                    raise ValueError(
                        f"template {exc.filename or name}:{exc.lineno}: {exc.message}"
                    ) from None

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self._compiled)

    def render(self, name: str, locale: Locale, context: Mapping[str, Any]) -> Rendered:
        """Render one message; any problem with the template or the data is InvalidJob."""
        templates = self._compiled.get((name, locale))
        if templates is None:
            raise InvalidJob(f"template: unknown template {name!r}")
        subject_t, html_t, text_t = templates
        values = {**context, "locale": locale}
        try:
            subject = " ".join(subject_t.render(values).split())
            html = self._inliner.inline(html_t.render(values))
            text = text_t.render(values)
        except (jinja2.TemplateError, _FilterError, ValueError, TypeError) as exc:
            raise InvalidJob(f"template {name}/{locale}: {_describe(exc)}") from None
        if not subject:
            raise InvalidJob(f"template {name}/{locale}: the subject is empty")
        if unsafe_for_header(subject):
            raise InvalidJob(f"template {name}/{locale}: the subject has a control character")
        return Rendered(subject=subject, html=html, text=text)


# Stand-ins for what differs per recipient, rendered once per locale and replaced per
# message: characters from Unicode's private use area, which no template or data produces
# by accident (the sanitizer and the autoescape leave them alone).
NAME_MARK = "\ue000name\ue001"
UNSUBSCRIBE_MARK = "\ue000unsubscribe\ue001"


@dataclass(frozen=True, slots=True)
class PreparedIssue:
    """An issue rendered once per locale (with and without a name to greet), ready to be
    made personal for each recipient by replacing the stand-ins."""

    variants: dict[tuple[Locale, bool], Rendered]

    def personalize(self, locale: Locale, name: str | None, unsubscribe_url: str) -> Rendered:
        base = self.variants[(locale, bool(name))]
        html = base.html.replace(UNSUBSCRIBE_MARK, escape(unsubscribe_url))
        text = base.text.replace(UNSUBSCRIBE_MARK, unsubscribe_url)
        subject = base.subject
        if name:
            html = html.replace(NAME_MARK, escape(name))
            text = text.replace(NAME_MARK, name)
            subject = subject.replace(NAME_MARK, name)
        return Rendered(subject=subject, html=html, text=text)


def prepare_issue(
    renderer: Renderer, template: str, contexts: Mapping[Locale, Mapping[str, Any]]
) -> PreparedIssue:
    """Render every locale the issue may go out in, before anything is sent: a template
    error surfaces here, not at the 400,000th recipient."""
    variants: dict[tuple[Locale, bool], Rendered] = {}
    for locale, context in contexts.items():
        for named in (True, False):
            values = {
                **context,
                "name": NAME_MARK if named else None,
                "unsubscribe_url": UNSUBSCRIBE_MARK,
            }
            rendered = renderer.render(template, locale, values)
            if UNSUBSCRIBE_MARK not in rendered.html or UNSUBSCRIBE_MARK not in rendered.text:
                raise InvalidJob(
                    f"template {template}/{locale}: both parts must show the unsubscribe_url"
                )
            variants[(locale, named)] = rendered
    return PreparedIssue(variants)


class _FilterError(ValueError):
    pass


def _describe(exc: Exception) -> str:
    """The error in a reason: the filters repeat the value they refused (a link, a date),
    which may hold an address; it is masked."""
    text = mask_addresses(str(exc) or type(exc).__name__)
    return text if len(text) <= 300 else text[:297] + "..."


def _babel_locale(context: jinja2.runtime.Context) -> str:
    locale: Locale = context["locale"]
    return BABEL_LOCALES[locale]


def _defined(value: object) -> None:
    """A filter given a missing value says which one, as StrictUndefined does elsewhere."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


def _decimal(value: object, what: str) -> Decimal:
    _defined(value)
    if isinstance(value, float | bool):
        raise _FilterError(f"{what} {value!r} must be a decimal string, not a JSON number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _FilterError(f"{what} {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise _FilterError(f"{what} {value!r} is not a finite number")
    return number


@jinja2.pass_context
def _money(context: jinja2.runtime.Context, value: object, currency: str) -> str:
    return format_currency(_decimal(value, "amount"), currency, locale=_babel_locale(context))


@jinja2.pass_context
def _number(context: jinja2.runtime.Context, value: object) -> str:
    return format_decimal(_decimal(value, "number"), locale=_babel_locale(context))


@jinja2.pass_context
def _percent(context: jinja2.runtime.Context, value: object) -> str:
    return format_percent(
        _decimal(value, "percentage") / 100, locale=_babel_locale(context), format="#,##0.##%"
    )


def _parse_moment(value: object) -> datetime | date:
    _defined(value)
    if isinstance(value, datetime | date):
        return value
    if not isinstance(value, str):
        raise _FilterError(f"date {value!r} must be an ISO 8601 string")
    try:
        return datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    except ValueError:
        raise _FilterError(f"date {value!r} is not ISO 8601") from None


@jinja2.pass_context
def _date(context: jinja2.runtime.Context, value: object) -> str:
    return format_date(_parse_moment(value), format="long", locale=_babel_locale(context))


@jinja2.pass_context
def _datetime(context: jinja2.runtime.Context, value: object) -> str:
    moment = _parse_moment(value)
    if not isinstance(moment, datetime):
        raise _FilterError(f"date {value!r} has no time of day")
    # Shown in the offset it was given in: the portal knows the customer's time zone.
    return format_datetime(
        moment, format="d MMMM y, HH:mm", tzinfo=moment.tzinfo, locale=_babel_locale(context)
    )


def _url(value: object) -> str:
    """A link from the job's data: only http(s) and mailto, never `javascript:`."""
    _defined(value)
    if not isinstance(value, str) or urlsplit(value).scheme.lower() not in _URL_SCHEMES:
        raise _FilterError(f"link {value!r} must be an http(s) or mailto URL")
    return value


def _staff_html(value: object) -> Markup:
    _defined(value)
    if not isinstance(value, str):
        raise _FilterError("body_html must be a string")
    return Markup(sanitize_html(value))  # noqa: S704 - sanitized by nh3 just above
