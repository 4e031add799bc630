"""Threat and concession checks against generated variants, and ordinary reminders never flagged.

The variant corpus is generated here from base wordings a model might choose (not the listed
phrases): inflections, spacing, hyphens, case, look-alike letters, zero-width and soft-hyphen
characters, full-width forms. Every variant must reach the guardrails' ``content.legal_threat`` or
``content.unbacked_concession`` rule. The ordinary corpus is every drafter template in every
language and version, filled in, plus ordinary sentences: none may be flagged.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources

import pytest
import yaml

from policies.engine import PolicyEngine
from policies.facts import SendDraftFacts
from policies.policy_set import load_default
from policies.rules import ThreatScanner
from policies.textscan import PhraseMatcher, fold
from policies.types import ActionType

# Wordings a model might write, per language, each with the sentence it sits in ("{}" = the words).
THREATS: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("our lawyers", "Otherwise {} will contact you next week."),
        ("collection agencies", "We work with {} for balances like this one."),
        ("lawsuits", "Nobody enjoys {}, so please settle the balance."),
        ("suing", "We are considering {} your company."),
        ("garnished", "Your receivables could be {}."),
        ("legal-action", "This may lead to {} on our side."),
        ("legal", "Our {} action will start on Monday."),
        ("sued", "You will be {} for the full amount."),
        ("attorneys", "The file goes to our {} tomorrow."),
        ("courts", "The {} will decide this."),
        ("debt collectors", "We will pass the invoice to {}."),
        ("litigating", "We are {} similar cases already."),
        ("credit bureaus", "We report late accounts to {}."),
        ("bailiffs", "The {} will visit your office."),
        ("law suit", "A {} is the next step."),
        ("solicitor's", "Expect our {} letter."),
        ("repossessing", "We will start {} the equipment."),
    ],
    "de": [
        ("Anwälte", "Unsere {} melden sich bei Ihnen."),
        ("Klagen", "Wir werden {} einreichen."),
        ("verklagen", "Wir werden Sie {}."),
        ("Inkassobüros", "Wir arbeiten mit {} zusammen."),
        ("gerichtliche", "Es folgen {} Schritte."),
        ("Rechtsanwältin", "Die Akte geht an unsere {}."),
        ("Pfändungen", "Es drohen {}."),
    ],
    "fr": [
        ("avocats", "Nos {} vous contacteront."),
        ("huissiers", "Les {} passeront la semaine prochaine."),
        ("tribunaux", "Nous saisirons les {}."),
        ("poursuites judiciaires", "Des {} seront engagées."),
        ("agences de recouvrement", "Le dossier ira aux {}."),
    ],
    "es": [
        ("abogados", "Nuestros {} le contactarán."),
        ("demandaremos", "Si no paga, le {}."),
        ("embargos", "Habrá {} sobre sus cuentas."),
        ("tribunales", "Iremos a los {}."),
        ("agencias de cobro", "Pasaremos la deuda a {}."),
    ],
}

CONCESSIONS: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("discounts", "We can offer {} if you pay this week."),
        ("waive", "We will {} the remaining balance."),
        ("waived", "The last installment can be {}."),
        ("writing off", "We are happy {} the rest."),
        ("forgiven", "Half of the amount will be {}."),
        ("rebates", "Ask us about {}."),
        ("10 percent off", "Pay today and get {}."),
    ],
    "de": [
        ("Rabatte", "Wir bieten Ihnen {} an."),
        ("Skonto", "Bei Zahlung bis Freitag gewähren wir {}."),
        ("verzichten", "Wir {} auf den Restbetrag."),
    ],
    "fr": [
        ("remises", "Nous pouvons proposer des {}."),
        ("renonçons", "Nous {} au solde restant."),
    ],
    "es": [
        ("descuentos", "Podemos ofrecer {}."),
        ("condonamos", "Le {} el saldo pendiente."),
    ],
}

HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "i": "і", "s": "ѕ", "y": "у"}
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def _zero_width(word: str, rng: random.Random) -> str:
    chars = list(word)
    for _ in range(max(1, len(chars) // 3)):
        chars.insert(rng.randrange(1, max(2, len(chars))), rng.choice(INVISIBLE))
    return "".join(chars)


def _homoglyph(word: str) -> str:
    return "".join(HOMOGLYPHS.get(ch, ch) for ch in word)


def _fullwidth(word: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in word)


def variants(words: str, seed: int) -> Iterator[str]:
    """The wording as written and disguised: case, spacing, hyphens, look-alikes, invisibles."""
    rng = random.Random(seed)
    yield words
    yield words.upper()
    yield words.title()
    yield re.sub(r"[\s-]+", "  ", words)
    yield re.sub(r"[\s-]+", "\n", words)
    yield re.sub(r"\s+", "-", words)
    yield re.sub(r"\s+", "_", words)
    yield _homoglyph(words)
    yield _zero_width(words, rng)
    yield _zero_width(_homoglyph(words), rng)
    yield _fullwidth(words)
    if " " not in words and len(words) > 3:
        yield " ".join(words)  # spelled out letter by letter
        yield "-".join(words)


def corpus(table: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    out = []
    for language, rows in table.items():
        for n, (words, sentence) in enumerate(rows):
            for v in variants(words, seed=n):
                out.append((language, sentence.format(v)))
    return out


THREAT_CORPUS = corpus(THREATS)
CONCESSION_CORPUS = corpus(CONCESSIONS)


def _scanner() -> ThreatScanner:
    return ThreatScanner(load_default().content)


def test_the_threat_variant_corpus_is_caught_in_full() -> None:
    scanner = _scanner()
    missed = [(lang, text) for lang, text in THREAT_CORPUS if scanner.search(text) is None]
    assert len(THREAT_CORPUS) > 300
    assert missed == [], f"{len(missed)}/{len(THREAT_CORPUS)} missed: {missed[:10]}"


def test_the_concession_variant_corpus_is_caught_in_full() -> None:
    scanner = _scanner()
    missed = [(lang, text) for lang, text in CONCESSION_CORPUS if scanner.concession(text) is None]
    assert len(CONCESSION_CORPUS) > 100
    assert missed == [], f"{len(missed)}/{len(CONCESSION_CORPUS)} missed: {missed[:10]}"


FILL = {
    "first_name": "Dana",
    "full_name": "Dana Whitfield",
    "org_name": "Northwind Tools",
    "customer_name": "Harbor Freight Co",
    "sender_name": "Priya Raman",
    "invoice_number": "INV-20817",
    "balance": "$4,310.00",
    "due_date": "2026-03-02",
    "pay_link": "https://pay.example.com/t/xyz",
    "promise_amount": "$1,000.00",
    "promise_date": "2026-03-10",
    "installment_amount": "$500.00",
    "installment_date": "2026-04-01",
    "paid_amount": "$200.00",
    "po_reference": "PO-5521",
    "invoice_lines": "- INV-20817: $4,310.00, due on 2026-03-02",
}


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def ordinary_corpus() -> list[str]:
    """Every template text of every drafter version and language, filled in, and plain sentences."""
    texts: list[str] = []
    folder = resources.files("prompts").joinpath("drafter")
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=str):
        data = yaml.safe_load(path.read_text("utf-8"))
        for s in _strings(data):
            texts.append(re.sub(r"\{(\w+)\}", lambda m: FILL.get(m.group(1), "X"), s))
    texts += [
        "Hi Dana, could you confirm the invoice reached your accounts payable team?",
        "Thanks for the quick reply; the credit note you asked about was issued last week.",
        "If there is an issue with the order, tell us and we will look into it.",
        "Please let us know who handles payments now that Chris has moved on.",
        "We appreciate your business and your courtesy on the phone yesterday.",
        "Could you share the remittance advice once the transfer is scheduled?",
        "Vielen Dank für Ihre Rückmeldung, wir warten auf Ihre Zahlung.",
        "Merci de nous indiquer la date de paiement prévue; le lien est ci-dessous.",
        "Gracias por su respuesta; su factura sigue pendiente de pago.",
        "Le lien de paiement reste valable jusqu'au règlement.",
    ]
    return texts


def test_ordinary_reminders_are_never_flagged() -> None:
    scanner = _scanner()
    texts = ordinary_corpus()
    assert len(texts) > 200
    flagged = [
        (t, scanner.search(t), scanner.concession(t))
        for t in texts
        if scanner.search(t) or scanner.concession(t)
    ]
    assert flagged == []


def _facts(body: str, **ledger: object) -> SendDraftFacts:
    return SendDraftFacts.model_validate(
        {
            "now": datetime(2026, 3, 4, 15, tzinfo=UTC),
            "channel": "email",
            "maintenance": False,
            "cron_paused": False,
            "contact": {"timezone": "UTC", "opted_out": False, "bounced": False, "consent": True},
            "invoices": [{"number": "INV-1", "disputed": False}],
            "promises": [],
            "touches": [],
            "segment": "Mid-market",
            "org_shadow_mode": True,
            "segment_shadow_mode": False,
            "autopilot_enabled": False,
            "approved_by_roles": [],
            "content": {
                "body": body,
                "invoice_numbers": ["INV-1"],
                "amounts": [],
                "dates": [],
                "pay_link": "https://pay.example.com/t/1",
            },
            "ledger": {
                "invoice_numbers": ["INV-1"],
                "amounts": [],
                "dates": [],
                "pay_link": "https://pay.example.com/t/1",
                **ledger,
            },
        }
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    e = PolicyEngine()
    yield e
    e.close()


def _rules(engine: PolicyEngine, facts: SendDraftFacts) -> list[str]:
    return [r.rule_id for r in engine.decide(ActionType.SEND_DRAFT, facts).reasons]


def test_the_engine_sends_each_disguised_threat_to_legal(engine: PolicyEngine) -> None:
    sample = random.Random(7).sample(THREAT_CORPUS, 40)
    for _lang, text in sample:
        assert "content.legal_threat" in _rules(engine, _facts(text)), text


def test_an_unbacked_concession_needs_the_controller_and_a_backed_one_does_not(
    engine: PolicyEngine,
) -> None:
    text = "We will w\u200baive the rest of invoice INV-1."
    d = engine.decide(ActionType.SEND_DRAFT, _facts(text))
    assert "content.unbacked_concession" in [r.rule_id for r in d.reasons]
    assert d.approver_role == "Controller"
    backed = _facts(text, concession_approved=True)
    assert "content.unbacked_concession" not in _rules(engine, backed)


def test_the_phrases_listed_in_the_issue_are_caught() -> None:
    scanner = _scanner()
    for text in [
        "our lawyers",
        "collection agencies",
        "lawsuits",
        "suing",
        "garnished",
        "legal-action",
        "le\u200bgal action",
    ]:
        assert scanner.search(f"Please note: {text} may follow.") is not None, text


def test_a_phrase_is_only_stemmed_in_its_own_language() -> None:
    # English "sue" and Spanish "su" share no stem in English, and the Spanish "su" (your) is
    # never stemmed with another language's phrase list.
    matcher = PhraseMatcher({"en": ["sue"]})
    assert matcher.find("Gracias, su factura está pagada.") is None
    assert matcher.find("We may sue.") is not None


def test_fold_removes_invisibles_and_look_alikes() -> None:
    assert fold("LЕ\u200bGAL\u00ad-Аction") == ["legal", "action"]
    assert fold("ｌａｗｙｅｒ") == ["lawyer"]
    assert fold("s u e them") == ["sue", "them"]


def test_an_unknown_language_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="use one of"):
        PhraseMatcher({"it": ["avvocato"]})


def test_variants_are_distinct_per_wording() -> None:
    for words, _ in itertools.chain(*THREATS.values()):
        assert len(set(variants(words, 0))) >= 8


def test_stemming_is_safe_from_many_threads_at_once() -> None:
    """Autopilot decides drafts on several threads: a stemmer shared between them corrupted its
    state mid-word (IndexError inside Snowball, the draft blocked as an engine error)."""
    import threading

    from policies.textscan import _stemmer

    words = [f"zahlungserinnerungen{i}" for i in range(3000)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for w in words:
                _stemmer("de").stemWord(w)
        except BaseException as exc:  # noqa: BLE001 - the test collects what a thread raised
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_planes_scanned_for_marks_hold_every_format_character_and_combining_mark() -> None:
    """``fold`` builds its tables from ``ASSIGNED_PLANES`` only: no format character or combining
    mark of this Python's Unicode database may lie outside them (a newer database that put one
    there would let it through the folding unnoticed)."""
    import sys
    import unicodedata

    from policies.textscan import ASSIGNED_PLANES

    outside = [
        cp
        for cp in range(sys.maxunicode + 1)
        if (cp >> 16) not in ASSIGNED_PLANES
        and (unicodedata.category(chr(cp)) == "Cf" or unicodedata.combining(chr(cp)))
    ]
    assert outside == []
    assert fold("a\U000e0041b\u0301") == fold("ab")  # a tag character (plane 14), an accent
