"""Reading a payer's reply the way a collector does, whatever model classified it.

Why a second reading: a reply often says more than one thing ("we will pay $5,000 on the 20th,
the rest on 5 December; and please withdraw the dispute, it was our mistake"), and a model (or the
offline rules) that picks one class loses the rest. This module reads, sentence by sentence:

- **promises**: a commitment to pay (its common phrasings in English, German, French and
  Spanish) with the amount and the date it names. Amounts and dates come from the grounding
  reader (``tools.grounding.extraction.extract_facts``, which parses numbers with Babel's
  ``parse_decimal`` for the writer's locale) plus day-first numeric dates and weekday names
  from Babel's calendar data, never from a list of sentences;
- **dispute withdrawals**: "please delete/withdraw the dispute", "Reklamation zurückziehen",
  "annuler le litige", "retirar la reclamación". A withdrawal is a request for a person, never a
  reason to *open* a dispute;
- **coverage**: a promise far below the open balance it covers says so to the reviewer.

``reconcile`` merges that reading into the model's triage output: it adds the promises the model
missed (one proposal each), drops dispute proposals the payer asked to withdraw, and notes both in
the summary. Nothing here writes to the ledger; the vetting in ``agent.service`` still applies
(this customer's invoices only, no past dates, injection handling), and a person still accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from babel.dates import get_day_names

from agent.schemas import MoneyOut, ProposedChange, TriageCase, TriageOutput
from agent.wording import reason_from_words
from memory.money import exponent
from tools.grounding.extraction import extract_facts
from tools.kit.formatting import format_amount
from tools.replies.mail_reading import LANGUAGES, fold

#: A promise below this share of the open balance it covers is pointed out to the reviewer.
FAR_BELOW = Decimal("0.5")

_PROMISE = re.compile(
    # en
    r"\b(promise|commit|undertake|agree|plan|intend|expect|going|will|'ll|shall|can)\b"
    r"(\s+\w+){0,4}?\s+(to\s+)?(pay|settl|transfer|wir|remit|clear|send( you)?( the)? payment"
    r"|release( the)? payment|make( the)? payment)\w*\b"
    r"|\bpayment (will|shall|is scheduled|is planned|goes out|is going out)\b"
    r"|\bpayment\b.{0,40}\b(will|shall) (go out|be (made|sent|released|initiated|wired))\b"
    r"|\b(scheduled|planned|booked|set up|arranged) (the |a |our )?(payment|transfer|wire)\b"
    # de
    r"|\b(werden|wird|versprechen|sagen zu)\b.{0,60}\b(zahlen|bezahlen|uberweisen|begleichen"
    r"|anweisen)\b|\bwir (zahlen|bezahlen|uberweisen|begleichen)\b"
    r"|\b(zahlung|uberweisung) (erfolgt|wird|geht)\b|\b(zahlen|uberweisen|begleichen) wir\b"
    # fr
    r"|\b(paierons|payerons|reglerons|virerons|verserons|paierai|reglerai)\b"
    r"|\b(allons|vais|engageons a|promettons de) (vous )?(payer|regler|virer|verser)\b"
    r"|\b(paiement|virement|reglement)\b.{0,40}?\b(sera|est prevu|interviendra|partira)\b"
    # es
    r"|\b(pagaremos|abonaremos|transferiremos|liquidaremos|pagare)\b"
    r"|\b(vamos|voy|comprometemos|prometemos) (a )?(pagar|abonar|transferir|liquidar)\b"
    r"|\b(pago|transferencia)\b.{0,40}?\b(se (hara|realizara|efectuara)|sera"
    r"|esta (previst|programad))"
)
_NEGATED = re.compile(
    r"\b(not|never|cannot|can't|won't|unable|nicht|nie|keine?|pas|jamais|no|nunca)\b"
)
_WITHDRAW = re.compile(
    r"\b(delete|remove|withdraw|cancel|close|drop|retract|void)\w*\b.{0,30}"
    r"\b(dispute|claim|complaint)"
    r"|\b(dispute|claim|complaint)\b.{0,30}\b(withdrawn|resolved|no longer|closed|cancell?ed)"
    r"|\b(reklamation|einspruch|widerspruch|beanstandung)\w*\b.{0,30}"
    r"\b(zuruck|losch|storn|erledigt|aufheb)"
    r"|\b(zuruckziehen|loschen|stornieren)\b.{0,30}\b(reklamation|einspruch|widerspruch)"
    r"|\b(annul|retir|supprim|clotur|ferm)\w*\b.{0,30}\b(litige|contestation|reclamation)"
    r"|\b(litige|contestation|reclamation)\b.{0,30}\b(annul|retir|supprim|clos|resolu)"
    r"|\b(cancel|retir|elimin|borr|cerr)\w*\b.{0,30}\b(disputa|reclamacion|reclamo)"
    r"|\b(disputa|reclamacion|reclamo)\b.{0,30}\b(cancelad|retirad|resuelt|cerrad)"
)
_DOTTED = re.compile(r"\b(\d{1,2})\.\s?(\d{1,2})\.\s?(\d{4}|\d{2})?\b")
_MONTH_END = re.compile(
    r"\b(end of (the |this )?month|month[- ]end|monatsende|ende (des|dieses) monats"
    r"|fin (du|de ce) mois|fin de(l| este)? mes)\b"
)
_NEXT = re.compile(r"\b(next|nachsten|kommenden|prochain|proxim[oa])\b")
#: Sentence ends, but not the dot of a German day ("am 4. Dezember").
_SENTENCES = re.compile(r"(?<![\s(]\d\.)(?<![\s(]\d\d\.)(?<=[.!?;])\s+|\n+")


@dataclass(frozen=True)
class PromiseReading:
    """One promise as the payer wrote it: amount (None when not written), date, invoices."""

    amount: MoneyOut | None
    on_date: date
    invoice_numbers: list[str]
    sentence: str


@dataclass(frozen=True)
class DisputeReading:
    """A sentence contesting invoices: the reason key and the invoices it names."""

    reason: str
    invoice_numbers: list[str]
    sentence: str


@dataclass
class Reading:
    promises: list[PromiseReading] = field(default_factory=list)
    disputes: list[DisputeReading] = field(default_factory=list)
    withdraws_dispute: list[str] = field(default_factory=list)  # the sentences asking it


def _weekday_date(folded: str, as_of: date) -> date | None:
    """ "on Friday" / "next Friday" / "am Freitag" / "vendredi" / "el viernes": the coming one
    (a week later with "next" when that day is this week's), from Babel's day names."""
    for language in LANGUAGES:
        for index, name in get_day_names("wide", locale=language).items():
            if re.search(rf"\b{re.escape(fold(name))}\b", folded):
                ahead = (index - as_of.weekday()) % 7 or 7
                return as_of + timedelta(days=ahead)
    return None


def dates_in(sentence: str, as_of: date) -> list[date]:
    """Every date from ``as_of`` on that the sentence names, in the order written."""
    found: list[date] = []
    for language in LANGUAGES:
        found += extract_facts(sentence, language=language, as_of=as_of).dates
    for m in _DOTTED.finditer(sentence):  # 25.11.2026 / 25.11. : day first wherever dots are used
        year = int(m.group(3) or as_of.year)
        year += 2000 if year < 100 else 0
        try:
            d = date(year, int(m.group(2)), int(m.group(1)))
        except ValueError:
            continue
        found.append(d if m.group(3) or d >= as_of else d.replace(year=year + 1))
    folded = fold(sentence)
    if _MONTH_END.search(folded):
        nxt = (as_of.replace(day=28) + timedelta(days=4)).replace(day=1)
        found.append(nxt - timedelta(days=1))
    weekday = _weekday_date(folded, as_of)
    if weekday is not None:
        found.append(weekday)
    return sorted({d for d in found if d >= as_of}, key=found.index)


def _amounts_in(sentence: str, case: TriageCase) -> list[MoneyOut]:
    currencies = case.currencies or sorted({i.currency for i in case.invoices})
    out: list[MoneyOut] = []
    for language in LANGUAGES:
        for a in extract_facts(sentence, language=language, as_of=case.as_of).amounts:
            fits = [c for c in a.currencies if c in currencies] if a.currencies else currencies
            if len(fits) != 1:
                continue
            try:
                minor = int(Decimal(a.value).scaleb(exponent(fits[0])).to_integral_value())
            except (InvalidOperation, ValueError):
                continue
            money = MoneyOut(amount_minor=minor, currency=fits[0])
            if minor > 0 and money not in out:
                out.append(money)
        if out:
            return out  # the first language that reads an amount reads them all
    return out


def _targets(sentence: str, reply: str, case: TriageCase, amount: MoneyOut | None) -> list[str]:
    """The invoices a promise is about: named in its sentence, else in the reply, else the one
    whose balance it equals, else the oldest in its currency that the amount reaches (of those
    not in dispute)."""
    known = [i.number for i in case.invoices]
    for text in (sentence, reply):
        named = [n for n in known if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text, re.I)]
        if named:
            return named
    # Unnamed, a promise pays what is being chased: an invoice in dispute is not (still payable
    # when the payer names it).
    pool = [
        i
        for i in case.invoices
        if (amount is None or i.currency == amount.currency) and not i.disputed
    ]
    if amount is not None:
        exact = [i.number for i in pool if i.balance_minor == amount.amount_minor]
        if exact:
            return exact[:1]
    if amount is None:
        return [pool[0].number] if len(pool) == 1 else []
    covered, picked = 0, []
    for inv in sorted(pool, key=lambda i: i.due_date):  # oldest first, as payments are applied
        picked.append(inv.number)
        covered += inv.balance_minor
        if covered >= amount.amount_minor:
            break
    return picked


def read_reply(case: TriageCase, text: str) -> Reading:
    """The promises and dispute withdrawals in a reply (see the module docstring)."""
    reading = Reading()
    for sentence in (s.strip() for s in _SENTENCES.split(text)):
        if not sentence:
            continue
        folded = fold(sentence)
        if _WITHDRAW.search(folded):
            reading.withdraws_dispute.append(sentence)
            continue
        m = _PROMISE.search(folded)
        if m is None:
            _read_dispute(reading, sentence, folded, case)
        if m is None or _NEGATED.search(folded[max(0, m.start() - 25) : m.end() + 12]):
            continue
        dates = dates_in(sentence, case.as_of)
        if not dates:
            continue
        amounts = _amounts_in(sentence, case) or [None]  # type: ignore[list-item]
        for i, amount in enumerate(amounts):
            on = dates[min(i, len(dates) - 1)]
            targets = _targets(sentence, text, case, amount)
            if amount is None and targets:
                invs = [inv for inv in case.invoices if inv.number in targets]
                if len({inv.currency for inv in invs}) == 1:
                    amount = MoneyOut(
                        amount_minor=sum(inv.balance_minor for inv in invs),
                        currency=invs[0].currency,
                    )
            reading.promises.append(PromiseReading(amount, on, targets, sentence))
    return reading


def _read_dispute(reading: Reading, sentence: str, folded: str, case: TriageCase) -> None:
    """A sentence that contests named invoices (the dispute workflow's reason keys)."""
    reason = reason_from_words(folded)
    if reason is None:
        return
    named = [
        i.number
        for i in case.invoices
        if re.search(rf"(?<![\w-]){re.escape(i.number)}(?![\w-])", sentence, re.I)
    ]
    if named:
        reading.disputes.append(DisputeReading(reason, named, sentence))


def coverage_note(case: TriageCase, amount: MoneyOut | None, numbers: list[str]) -> str | None:
    """Said to the reviewer when a promise is far below the open balance it covers."""
    if amount is None:
        return None
    invs = [i for i in case.invoices if i.number in numbers and i.currency == amount.currency]
    if not invs:
        invs = [i for i in case.invoices if i.currency == amount.currency]
    open_minor = sum(i.balance_minor for i in invs)
    if open_minor <= 0 or Decimal(amount.amount_minor) >= FAR_BELOW * open_minor:
        return None
    share = int(Decimal(amount.amount_minor) * 100 / open_minor)
    return (
        f"Far below what it covers: {format_amount(amount.amount_minor, amount.currency, 'en_US')}"
        f" of {format_amount(open_minor, amount.currency, 'en_US')} open "
        f"({share}%) on {', '.join(i.number for i in invs)}; ask for the rest or a plan."
    )


def reconcile(out: TriageOutput, case: TriageCase, text: str) -> TriageOutput:
    """The model's triage with this reading merged in (see the module docstring)."""
    reading = read_reply(case, text)
    changes = list(out.proposed_changes)
    notes: list[str] = []
    if reading.withdraws_dispute:
        kept = [c for c in changes if c.kind != "open_dispute"]
        if len(kept) != len(changes):
            notes.append("The payer asks to withdraw a dispute, so none is proposed")
        else:
            notes.append("The payer asks to withdraw a dispute; a person decides")
        changes = kept
    contested = {n for c in changes if c.kind == "open_dispute" for n in c.invoice_numbers}
    for d in reading.disputes if not reading.withdraws_dispute else []:
        fresh = [n for n in d.invoice_numbers if n not in contested]
        if fresh and len(changes) < 5:
            contested.update(fresh)
            changes.append(
                ProposedChange(
                    kind="open_dispute",
                    invoice_numbers=fresh,
                    reason=d.reason,
                    detail="Open a dispute so the invoice is not chased while it is checked.",
                )
            )
    logged = {(c.on_date, c.amount.amount_minor if c.amount else None): i
              for i, c in enumerate(changes) if c.kind == "log_promise"}  # fmt: skip
    for p in reading.promises:
        key = (p.on_date, p.amount.amount_minor if p.amount else None)
        if key in logged:
            # The same promise without its invoices (a reply to a statement names none): the
            # invoices this reading finds, else nobody could accept it.
            same = changes[logged[key]]
            if not same.invoice_numbers and p.invoice_numbers:
                changes[logged[key]] = same.model_copy(
                    update={"invoice_numbers": p.invoice_numbers}
                )
            continue
        if len(changes) >= 5:
            continue
        logged[key] = len(changes)
        changes.append(
            ProposedChange(
                kind="log_promise",
                invoice_numbers=p.invoice_numbers,
                amount=p.amount,
                on_date=p.on_date,
                detail="Log this promise-to-pay; chasing pauses until its date plus grace.",
            )
        )
    changes = [_with_coverage(c, case) for c in changes]
    promises = [c for c in changes if c.kind == "log_promise"]
    classification = out.classification
    if (
        promises
        and classification in ("other", "question", "dispute")
        and not any(c.kind == "open_dispute" for c in changes)
    ):
        classification = "promise"
    first = promises[0] if promises else None
    summary = out.summary
    if promises and classification == "promise" and out.classification != "promise":
        summary = f"Promise to pay: {len(promises)} proposal(s). " + summary
    if notes:
        summary = summary + " " + "; ".join(notes) + "."
    return out.model_copy(
        update={
            "classification": classification,
            "proposed_changes": changes,
            "promise_amount": out.promise_amount or (first.amount if first else None),
            "promise_date": out.promise_date or (first.on_date if first else None),
            "summary": summary.strip()[:400],
        }
    )


def _with_coverage(change: ProposedChange, case: TriageCase) -> ProposedChange:
    if change.kind != "log_promise":
        return change
    note = coverage_note(case, change.amount, change.invoice_numbers)
    if note is None or note in change.detail:
        return change
    return change.model_copy(update={"detail": (note + " " + change.detail)[:300]})
