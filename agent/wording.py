"""Small, model-independent readings of words that production code needs.

Why a module of its own: the offline model (``agent.offline``) is a test double for a real model;
production code must not lean on its classifiers, or a real model's run would quietly depend on
rules written for the offline one. What production needs from words is here: accent folding, the
language an operator asks a revision to be written in, and a model's free wording of a dispute
reason turned into the dispute workflow's key.
"""

from __future__ import annotations

import re
import unicodedata

LANG_WORDS: tuple[tuple[str, str], ...] = (
    (r"\b(in english|auf englisch|en anglais|en ingl[eé]s)\b", "en"),
    (r"\b(in german|auf deutsch|en allemand|en alem[aá]n|deutsch)\b", "de"),
    (r"\b(in french|auf franz[oö]sisch|en fran[cç]ais)\b", "fr"),
    (r"\b(in spanish|auf spanisch|en espagnol|en espa[nñ]ol)\b", "es"),
)

#: Word beginnings that name each dispute reason (``tools.commitments.disputes.REASONS``), in
#: en/de/fr/es.
_REASON_WORDS: dict[str, tuple[str, ...]] = {
    "pricing": ("price", "pricing", "rate", "overcharg", "preis", "prix", "tarif", "precio"),
    "quantity": ("quantit", "menge", "cantidad", "count", "too many", "zu viele"),
    "not_received": (
        "not received",
        "never received",
        "not delivered",
        "undelivered",
        "not arrived",
        "nicht erhalten",
        "nicht geliefert",
        "pas recu",
        "non livre",
        "no recibid",
        "no lleg",
        "no entregad",
    ),  # fmt: skip
    "duplicate_billing": (
        "duplicate",
        "twice",
        "double",
        "doppelt",
        "zweimal",
        "deux fois",
        "duplicad",
        "dos veces",
    ),  # fmt: skip
    "quality": (
        "damag",
        "defect",
        "broken",
        "faulty",
        "quality",
        "beschadig",
        "defekt",
        "mangel",
        "endommag",
        "defectu",
        "danad",
        "qualit",
        "calidad",
    ),  # fmt: skip
    "tax": ("vat", "tax", "mwst", "ust", "tva", "iva"),
}


def fold_text(text: str) -> str:
    """Lower case without accents ("Büro" -> "buro", "ß" -> "ss"): one spelling per keyword."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace("ß", "ss")


def requested_language(instruction: str) -> str | None:
    """The language an operator asks a revision to be written in ("in German"), if any."""
    low = instruction.lower()
    for rx, lang in LANG_WORDS:
        if re.search(rx, low):
            return lang
    return None


def reason_from_words(folded: str) -> str | None:
    """The dispute reason a short folded wording names ("wrong unit price" -> pricing), or None."""
    text = " " + re.sub(r"[\s_-]+", " ", folded) + " "
    for reason, words in _REASON_WORDS.items():
        if any(re.search(r"\b" + re.escape(w), text) for w in words):
            return reason
    return None
