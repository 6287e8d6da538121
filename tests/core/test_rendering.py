from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mailer.core.rendering import Renderer, html_to_text, prepare_issue, sanitize_html
from mailer.errors import InvalidJob
from tests.support.jobs import receipt

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(ROOT / "templates")


def receipt_context(**overrides: Any) -> dict[str, Any]:
    """What the receipt pipeline gives the template: the job's data and a few extras."""
    context: dict[str, Any] = {
        **receipt()["data"],
        "to_name": "Jan Kowalski",
        "attachments": ["FV-2026-11-0042.pdf"],
    }
    context.update(overrides)
    return context


def test_polish_receipt_formats_money_and_dates_for_poland(renderer: Renderer) -> None:
    rendered = renderer.render("receipt", "pl", receipt_context())
    assert rendered.subject == "Potwierdzenie zamówienia ZAM/2026/11/0042"
    assert "Razem do zapłaty: 1\xa0476,00\xa0zł" in rendered.text
    assert "24 listopada 2026" in rendered.text
    assert "1&nbsp;476,00&nbsp;zł" in rendered.html
    assert 'lang="pl"' in rendered.html
    assert "FV-2026-11-0042.pdf" in rendered.text


def test_english_receipt(renderer: Renderer) -> None:
    rendered = renderer.render("receipt", "en", receipt_context())
    assert rendered.subject == "Order confirmation ZAM/2026/11/0042"
    assert "24 November 2026" in rendered.text
    assert "1,476.00" in rendered.text
    assert 'lang="en"' in rendered.html


def test_css_is_inlined_for_mail_clients(renderer: Renderer) -> None:
    html = renderer.render("receipt", "pl", receipt_context()).html
    assert '<h1 style="' in html
    styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert styles  # media queries cannot be inlined: they stay, and only they
    assert all(style.strip().startswith("@media") for style in styles)


def test_html_is_autoescaped(renderer: Renderer) -> None:
    evil = '<script>alert("x")</script>'
    rendered = renderer.render("receipt", "pl", receipt_context(to_name=evil))
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert evil in rendered.text  # the text part is not HTML: shown as written


def test_a_missing_value_is_an_error_not_a_hole(renderer: Renderer) -> None:
    context = receipt_context()
    del context["total"]
    with pytest.raises(InvalidJob, match=r"template receipt/pl: 'total' is undefined"):
        renderer.render("receipt", "pl", context)


def test_money_must_be_a_decimal_string(renderer: Renderer) -> None:
    with pytest.raises(InvalidJob, match="must be a decimal string, not a JSON number"):
        renderer.render("receipt", "pl", receipt_context(total=1476.0))
    with pytest.raises(InvalidJob, match="is not a decimal number"):
        renderer.render("receipt", "pl", receipt_context(total="tysiąc"))


def test_unknown_template(renderer: Renderer) -> None:
    with pytest.raises(InvalidJob, match="template: unknown template 'invoice'"):
        renderer.render("invoice", "pl", receipt_context())


def test_a_subject_cannot_smuggle_a_header(renderer: Renderer) -> None:
    rendered = renderer.render(
        "receipt", "pl", receipt_context(order_number="42\r\nBcc: everyone@example.pl")
    )
    assert "\r" not in rendered.subject and "\n" not in rendered.subject


def _template(root: Path, name: str, subject: str = "S") -> None:
    for locale in ("pl", "en"):
        folder = root / name / locale
        folder.mkdir(parents=True)
        (folder / "subject.txt.j2").write_text(subject)
        (folder / "body.html.j2").write_text("{{ value }}")
        (folder / "body.txt.j2").write_text("{{ value }}")


def test_a_syntax_error_is_found_at_start_not_per_job(tmp_path: Path) -> None:
    _template(tmp_path, "broken", subject="{{ unclosed ")
    with pytest.raises(ValueError, match=r"broken/pl/subject.txt.j2:1: unexpected end"):
        Renderer(tmp_path)


def test_a_template_must_exist_in_every_locale(tmp_path: Path) -> None:
    _template(tmp_path, "half")
    (tmp_path / "half" / "en" / "body.txt.j2").unlink()
    with pytest.raises(ValueError, match=r"template 'half' lacks half/en/body.txt.j2"):
        Renderer(tmp_path)


def test_autoescape_is_on_whatever_the_file_name_unless_it_is_text(tmp_path: Path) -> None:
    _template(tmp_path, "odd")
    (tmp_path / "_partials").mkdir()
    (tmp_path / "_partials" / "snippet.tmpl").write_text("[{{ value }}]")
    (tmp_path / "odd" / "pl" / "body.html.j2").write_text('{% include "_partials/snippet.tmpl" %}')
    rendered = Renderer(tmp_path).render("odd", "pl", {"value": "<b>"})
    assert rendered.html == "<html><head></head><body>[&lt;b&gt;]</body></html>"
    assert rendered.text == "<b>"


def test_staff_html_is_sanitized() -> None:
    dirty = (
        '<p onclick="steal()">Hi <a href="javascript:alert(1)">x</a>'
        '<a href="https://lucid.example/a">ok</a><script>bad()</script>'
        '<img src="data:image/png;base64,AAAA"><form action="/x"><input name="p"></form>'
        '<span style="color: red; position: fixed">red</span></p>'
    )
    clean = sanitize_html(dirty)
    for banned in (
        "onclick",
        "javascript:",
        "<script",
        "bad()",
        "data:",
        "<form",
        "<input",
        "position",
    ):
        assert banned not in clean
    assert 'href="https://lucid.example/a"' in clean
    assert "color:red" in clean.replace(" ", "")


def test_html_to_text_keeps_links() -> None:
    text = html_to_text('<h2>Kanban</h2><p>Przeciągnij <a href="https://x.example/k">tutaj</a></p>')
    assert "Kanban" in text
    assert "https://x.example/k" in text


def test_filters_for_numbers_percentages_and_moments(tmp_path: Path) -> None:
    _template(tmp_path, "f")
    (tmp_path / "f" / "pl" / "body.txt.j2").write_text(
        "{{ n|number }}|{{ p|percent }}|{{ d|date }}|{{ t|datetime }}|{{ h|staff_html }}"
    )
    renderer = Renderer(tmp_path)
    text = renderer.render(
        "f",
        "pl",
        {
            "n": "12345.5",
            "p": "8",
            "d": "2026-11-24",
            "t": "2026-11-24T10:15:00+01:00",
            "h": "<p>x</p>",
            "value": "",
        },
    ).text
    assert text == "12\xa0345,5|8%|24 listopada 2026|24 listopada 2026, 10:15|<p>x</p>"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n": "NaN"}, "is not a finite number"),
        ({"d": "yesterday"}, "is not ISO 8601"),
        ({"d": 20261124}, "must be an ISO 8601 string"),
        ({"t": "2026-11-24"}, "has no time of day"),
        ({"h": 5}, "body_html must be a string"),
    ],
)
def test_filters_refuse_bad_values(tmp_path: Path, values: dict[str, object], message: str) -> None:
    _template(tmp_path, "f")
    name = next(iter(values))
    expression = {"n": "n|number", "d": "d|date", "t": "t|datetime", "h": "h|staff_html"}[name]
    (tmp_path / "f" / "pl" / "body.txt.j2").write_text("{{ " + expression + " }}")
    with pytest.raises(InvalidJob, match=message):
        Renderer(tmp_path).render("f", "pl", {**values, "value": ""})


@pytest.mark.parametrize(
    ("subject", "message"), [("  ", "the subject is empty"), ("a\x00b", "control character")]
)
def test_a_subject_must_be_usable(tmp_path: Path, subject: str, message: str) -> None:
    _template(tmp_path, "s", subject="{{ subject }}")
    with pytest.raises(InvalidJob, match=message):
        Renderer(tmp_path).render("s", "pl", {"subject": subject, "value": ""})


NEWSLETTER = {
    "subject": "Nowości",
    "list_name": "Lucid News",
    "preheader": "Trzy nowe funkcje",
    "articles": [
        {
            "title": "Kanban",
            "body_html": "<p>Przeciągnij <b>i</b> upuść</p>",
            "url": "https://lucid.example/blog/kanban",
        }
    ],
}


def test_an_issue_is_rendered_once_per_locale_then_made_personal(renderer: Renderer) -> None:
    prepared = prepare_issue(
        renderer, "newsletter", {"pl": NEWSLETTER, "en": {**NEWSLETTER, "subject": "News"}}
    )
    assert set(prepared.variants) == {("pl", True), ("pl", False), ("en", True), ("en", False)}
    anna = prepared.personalize("pl", 'Anna <"Nowak">', "https://m.example/u/TOKEN&x")
    assert anna.subject == "Nowości"
    assert "Cześć Anna &lt;&#34;Nowak&#34;&gt;," in anna.html
    assert 'href="https://m.example/u/TOKEN&amp;x"' in anna.html
    assert 'Cześć Anna <"Nowak">,' in anna.text
    assert "https://m.example/u/TOKEN&x" in anna.text
    assert "Przeciągnij i upuść" in anna.text  # from the staff HTML
    nameless = prepared.personalize("en", None, "https://m.example/u/T")
    assert nameless.subject == "News"
    assert nameless.text.startswith("Hello,")
    assert "\ue000" not in nameless.html + nameless.text


def test_an_issue_template_must_carry_the_unsubscribe_link(tmp_path: Path) -> None:
    _template(tmp_path, "bare")
    with pytest.raises(InvalidJob, match="both parts must show the unsubscribe_url"):
        prepare_issue(Renderer(tmp_path), "bare", {"pl": {"value": ""}})


def test_links_in_data_must_be_web_links(renderer: Renderer) -> None:
    bad = {
        **NEWSLETTER,
        "articles": [
            {
                **NEWSLETTER["articles"][0],  # type: ignore[dict-item]
                "url": "javascript:alert(1)",
            }
        ],
    }
    with pytest.raises(InvalidJob, match="must be an http"):
        prepare_issue(renderer, "newsletter", {"pl": bad})
