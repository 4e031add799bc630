"""``PhraseMatcher.find_all`` remembers answers per window of words and asks about words holding a
non-letter as one placeholder: it must find exactly what scanning every word with ``_at`` finds.
``PhraseScan`` asks several matchers in one pass: each must get exactly its own ``find``.

The reference below is the scan without either shortcut. Texts mix the listed phrases' words and
their inflections with amounts, invoice numbers, words glued to digits ("inkasso2024", which opens
a German compound) and ordinary words; the same matcher answers many texts in a row, so its
remembered windows are reused (and emptied when full).
"""

from __future__ import annotations

import random

import pytest

from policies import textscan
from policies.policy_set import load_default
from policies.rules import ThreatScanner
from policies.textscan import Hit, PhraseMatcher, PhraseScan, _at, stem


def reference(matcher: PhraseMatcher, text: str) -> list[Hit]:
    words = list(textscan._folded(text))
    mixed = [not w.isalpha() for w in words]
    hits: list[Hit] = []
    for language, firsts in matcher.by_language.items():
        stems = [stem(language, w) for w in words]
        skip = mixed if matcher.letters_only[language] else None
        for i in range(len(words)):
            hit = _at(
                words, stems, i, firsts, matcher.joined[language], language,
                matcher.heads.get(language), skip,
            )  # fmt: skip
            if hit is not None:
                hits.append(hit)
    return hits


def _texts(vocab: list[str], seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    common = ["the", "a", "we", "will", "our", "your", "invoice", "payment", "please"]
    common += ["pay", "now", "und", "die", "le", "la", "el", "de"]

    def token() -> str:
        r = rng.random()
        if r < 0.35:
            return rng.choice(vocab)
        if r < 0.6:
            return rng.choice(common)
        if r < 0.75:
            return str(rng.randint(0, 99_999))
        if r < 0.88:
            return rng.choice(vocab) + str(rng.randint(0, 999))
        if r < 0.94:
            return str(rng.randint(0, 9)) + rng.choice(vocab)
        return rng.choice(["-", ",", "$", "%", "½", "²", "Ⅻ", "①", "٣", "l e g a l"])

    return [" ".join(token() for _ in range(rng.randint(1, 40))) for _ in range(n)]


def _vocab(phrases: dict[str, list[str]]) -> list[str]:
    words: set[str] = set()
    for texts in phrases.values():
        for text in texts:
            for w in text.lstrip("=").rstrip("*").split():
                words.update({w, w + "s", w + "en", w[:-1] if len(w) > 3 else w})
    return sorted(words)


def test_the_default_policy_scans_find_what_every_word_scanned_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(textscan, "_MEMO_MAX", 300)  # emptied many times over
    content = load_default().content
    scanner = ThreatScanner(content)
    vocab = _vocab(
        {
            **{f"t{k}": v for k, v in content.threat_phrases().items()},
            **{f"c{k}": v for k, v in content.concession_phrases.items()},
            **{f"d{k}": v for k, v in content.payment_demand_phrases.items()},
        }
    )
    found = 0
    for text in _texts(vocab, seed=11, n=600):
        for matcher in (scanner.threats, scanner.concessions, scanner.demands):
            expected = reference(matcher, text)
            assert matcher.find_all(text) == expected, text
            assert matcher.find(text) == (expected[0] if expected else None), text
            found += bool(expected)
    assert found > 200  # the texts do hold phrases


def test_phrases_holding_digits_are_still_found_next_to_numbers() -> None:
    phrases = {
        "en": ["30 days", "legal action", "=sue", "lawyer"],
        "de": ["inkasso", "2 mahnung", "anwalt"],
        "es": ["abogado", "demanda 3"],
    }
    matcher = PhraseMatcher(phrases)
    assert not matcher.letter_keys["en"]  # "30": the placeholder is not used here
    for text in _texts(_vocab(phrases) + ["30", "2", "3", "inkasso2024"], seed=5, n=500):
        assert matcher.find_all(text) == reference(matcher, text), text
    assert [h.found for h in matcher.find_all("within 30 days or legal action")] == [
        "30 days",
        "legal action",
    ]


def test_a_word_glued_to_digits_still_opens_a_german_compound() -> None:
    matcher = ThreatScanner(load_default().content).threats
    assert matcher.letter_keys["de"]
    hit = matcher.find("Wir übergeben die Sache an Inkasso2024 weiter.")
    assert hit is not None and hit.found == "inkasso2024"


def test_one_pass_over_several_matchers_finds_what_each_finds_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(textscan, "_MEMO_MAX", 200)  # emptied many times over
    monkeypatch.setattr(textscan, "_TEXTS_MAX", 150)  # whole texts too
    content = load_default().content
    scanner = ThreatScanner(content)
    own = PhraseMatcher(  # phrases holding digits: no placeholder for any matcher
        {"en": ["30 days", "legal action"], "de": ["inkasso", "2 mahnung"]}
    )
    one_pass = PhraseScan([scanner.threats, scanner.concessions, scanner.demands])
    with_digits = PhraseScan([scanner.threats, own])
    vocab = _vocab(
        {
            **{f"t{k}": v for k, v in content.threat_phrases().items()},
            **{f"c{k}": v for k, v in content.concession_phrases.items()},
            **{f"d{k}": v for k, v in content.payment_demand_phrases.items()},
        }
    )
    found = 0
    texts = _texts(vocab + ["30", "2", "days", "inkasso2024"], seed=17, n=700)
    for text in texts + texts[:100]:  # the second time from the remembered texts
        expected = tuple(m.find(text) for m in one_pass.matchers)
        assert one_pass.first(text) == expected, text
        assert with_digits.first(text) == tuple(m.find(text) for m in with_digits.matchers), text
        found += sum(h is not None for h in expected)
    assert found > 300  # the texts do hold phrases
    # A text differing only in its numbers is the remembered text (the placeholders hide them).
    again = "Invoice 7312 of 1,204.50 USD: we may refer this to a collection agency."
    assert one_pass.first(again.replace("7312", "9")) == tuple(
        m.find(again) for m in one_pass.matchers
    )
    assert one_pass.first(again)[0] is not None
    assert not with_digits.letter_keys and one_pass.letter_keys
    assert scanner.threat_and_concession("Our lawyers may waive the fee") == (
        scanner.search("Our lawyers may waive the fee"),
        scanner.concession("Our lawyers may waive the fee"),
    )
