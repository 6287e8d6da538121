"""What the recipients' pages say, in Polish and English."""

from __future__ import annotations

from mailer.core.locales import Locale

STRINGS: dict[Locale, dict[str, str]] = {
    "pl": {
        "unsubscribe_title": "Wypisanie z listy",
        "unsubscribe_question": "Czy wypisać adres {address} z listy {list}?",
        "unsubscribe_button": "Wypisz mnie",
        "unsubscribed_title": "Wypisano z listy",
        "unsubscribed_text": "Adres {address} nie jest już zapisany na listę {list}. "
        "Nie wyślemy na niego kolejnych wydań.",
        "undo_text": "Kliknięcie przez pomyłkę?",
        "resubscribe_button": "Zapisz mnie ponownie",
        "resubscribed_title": "Zapisano ponownie",
        "resubscribed_text": "Adres {address} jest znów zapisany na listę {list}.",
        "not_subscribed_title": "Brak zapisu",
        "not_subscribed_text": "Ten adres nie jest zapisany na tę listę.",
        "confirm_title": "Potwierdzenie zapisu",
        "confirm_question": "Czy zapisać adres {address} na listę {list}?",
        "confirm_button": "Potwierdzam zapis",
        "confirmed_title": "Zapis potwierdzony",
        "confirmed_text": "Dziękujemy! Adres {address} jest zapisany na listę {list}. "
        "Z każdego wydania możesz się wypisać jednym kliknięciem.",
        "invalid_title": "Nieprawidłowy link",
        "invalid_text": "Ten link jest niepełny, uszkodzony albo wygasł. "
        "Spróbuj skopiować go z wiadomości w całości.",
        "limited_title": "Zbyt wiele prób",
        "limited_text": "Zbyt wiele nieprawidłowych linków z tego adresu. Spróbuj za minutę.",
        "bad_request_title": "Nieprawidłowe żądanie",
        "bad_request_text": "Nie rozpoznaliśmy tego żądania.",
        "forbidden_title": "Odmowa",
        "forbidden_text": "To żądanie nie przyszło z tej strony, więc niczego nie zmieniliśmy.",
        "undo_expired_title": "Nie można cofnąć",
        "undo_expired_text": "Przycisk ponownego zapisu działa tylko przez chwilę po wypisaniu. "
        "Aby znów otrzymywać listę, zapisz się ponownie na stronie.",
        "undo_stale_title": "Nie można cofnąć",
        "undo_stale_text": "Od wypisania zapis się zmienił, więc niczego nie zmieniliśmy.",
        "confirm_stale_title": "Link nieaktualny",
        "confirm_stale_text": "Ten link potwierdzający nie jest już aktualny. "
        "Aby zapisać się na listę, zapisz się ponownie na stronie.",
        "timeout_title": "Przekroczono czas",
        "timeout_text": "Żądanie nie dotarło w całości. Spróbuj ponownie.",
        "trial_link_title": "Wiadomość testowa",
        "trial_link_text": "Ta wiadomość była próbą wydania: jej link wypisania nikogo nie "
        "wypisuje, więc niczego nie zmieniliśmy.",
    },
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_question": "Unsubscribe {address} from {list}?",
        "unsubscribe_button": "Unsubscribe me",
        "unsubscribed_title": "Unsubscribed",
        "unsubscribed_text": "{address} is no longer subscribed to {list}. "
        "We will not send it further issues.",
        "undo_text": "Clicked by mistake?",
        "resubscribe_button": "Subscribe me again",
        "resubscribed_title": "Subscribed again",
        "resubscribed_text": "{address} is subscribed to {list} again.",
        "not_subscribed_title": "Not subscribed",
        "not_subscribed_text": "This address is not subscribed to this list.",
        "confirm_title": "Confirm your subscription",
        "confirm_question": "Subscribe {address} to {list}?",
        "confirm_button": "Yes, subscribe me",
        "confirmed_title": "Subscription confirmed",
        "confirmed_text": "Thank you! {address} is subscribed to {list}. "
        "Every issue lets you unsubscribe with one click.",
        "invalid_title": "Invalid link",
        "invalid_text": "This link is incomplete, damaged or expired. "
        "Try copying it from the message in full.",
        "limited_title": "Too many attempts",
        "limited_text": "Too many invalid links from your address. Please try again in a minute.",
        "bad_request_title": "Bad request",
        "bad_request_text": "We did not recognize this request.",
        "forbidden_title": "Refused",
        "forbidden_text": "This request did not come from this page, so nothing was changed.",
        "undo_expired_title": "Cannot undo",
        "undo_expired_text": "The button to subscribe again works only for a short while after "
        "unsubscribing. To get the list again, please sign up again on the website.",
        "undo_stale_title": "Cannot undo",
        "undo_stale_text": "The subscription changed since you unsubscribed, so nothing "
        "was changed.",
        "confirm_stale_title": "Link no longer valid",
        "confirm_stale_text": "This confirmation link is no longer valid. "
        "To subscribe, please sign up again on the website.",
        "timeout_title": "Request timed out",
        "timeout_text": "The request did not arrive in full. Please try again.",
        "trial_link_title": "Test message",
        "trial_link_text": "This message was a test of an issue: its unsubscribe link "
        "unsubscribes nobody, so nothing was changed.",
    },
}
