"""The offline model, ``plixo-offline-v1``: deterministic, no network, no weights.

It is a pydantic-ai ``FunctionModel`` that plays each agent's part the way a careful model would,
through the same interface and with the same instructions: it reads the case file from the
prompt and submits the same typed output in one request, filling the same versioned templates; it
calls a read-only tool (``invoice_detail``) only when the case file lacks what a draft needs. Its
drafts are correct and plain; it is what a fresh install, the tests, the benchmarks and the eval
gate run with, and the CLI says so. Whatever it cannot do (reply phrasings its keyword rules were
not written for) the held-out eval set reports as a miss.

Which part it plays is read from the output tool the agent offers (``submit_draft``,
``submit_revision``, ``submit_recommendation``, ``submit_triage``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from agent.casefile import (
    CaseCommitment,
    CaseFile,
    CaseInvoice,
    Style,
    parse_case,
    relocalize,
    render,
    stated_facts,
)
from agent.safety import before_injection, injection_signals, unfence
from agent.schemas import (
    DRAFT_TOOL,
    INSPECTOR_TOOL,
    OFFLINE_MODEL_NAME,
    REVISION_TOOL,
    SPLIT_TOOL,
    TRIAGE_TOOL,
    InspectCase,
    RemittanceCase,
    TriageCase,
)
from agent.wording import LANG_WORDS, fold_text
from memory.money import exponent
from tools.grounding.extraction import StatedFacts, detect_language, extract_facts, invoice_shapes
from tools.kit import labels
from tools.kit.formatting import format_amount, format_day

# --- reading the conversation --------------------------------------------------------------------


def _user_texts(messages: Sequence[ModelMessage]) -> list[str]:
    out: list[str] = []
    for msg in messages:
        if isinstance(msg, ModelRequest):
            for part in msg.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    out.append(part.content)
    return out


def _returns(messages: Sequence[ModelMessage], tool: str) -> list[Any]:
    out: list[Any] = []
    for msg in messages:
        if isinstance(msg, ModelRequest):
            for part in msg.parts:
                if isinstance(part, ToolReturnPart) and part.tool_name == tool:
                    out.append(part.content)
    return out


def _section(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.DOTALL)
    return m.group(1) if m else None


def _usage(messages: Sequence[ModelMessage], out_chars: int) -> RequestUsage:
    """A cheap, honest estimate (characters / 4), so pydantic-ai need not tokenize history."""
    chars = 0
    for msg in messages:
        chars += len(getattr(msg, "instructions", None) or "")  # what a real model is sent too
        for part in msg.parts:
            content = getattr(part, "content", None)
            if isinstance(content, str):
                chars += len(content)
            elif content is not None:
                chars += 200
    return RequestUsage(input_tokens=max(1, chars // 4), output_tokens=max(1, out_chars // 4))


def _respond(messages: Sequence[ModelMessage], parts: list[Any], out_chars: int) -> ModelResponse:
    return ModelResponse(parts=parts, usage=_usage(messages, out_chars))


def _fail(messages: Sequence[ModelMessage], why: str) -> ModelResponse:
    return _respond(messages, [TextPart(f"plixo-offline-v1 cannot do this: {why}")], len(why))


# --- the drafter ---------------------------------------------------------------------------------


def _refresh_case(case: CaseFile, details: list[Any]) -> CaseFile:
    """The case with each invoice's figures as the ``invoice_detail`` tool returned them."""
    by_number: dict[str, dict[str, Any]] = {}
    for d in details:
        if isinstance(d, dict) and isinstance(d.get("invoice"), dict):
            by_number[d["invoice"]["number"]] = d
    invoices: list[CaseInvoice] = []
    for inv in case.invoices:
        d = by_number.get(inv.number)
        if d is None:
            invoices.append(inv)
            continue
        line = d["invoice"]
        amount, balance = int(line["amount_minor"]), int(line["balance_minor"])
        due = date.fromisoformat(line["due_date"])
        paid = max(0, amount - balance)
        cur = line["currency"]
        invoices.append(
            inv.model_copy(
                update={
                    "amount_minor": amount,
                    "balance_minor": balance,
                    "currency": cur,
                    "amount_text": format_amount(amount, cur, case.locale),
                    "balance_text": format_amount(balance, cur, case.locale),
                    "paid_minor": paid,
                    "paid_text": format_amount(paid, cur, case.locale) if paid else None,
                    "due_date": due,
                    "due_date_text": format_day(due, case.locale),
                    "days_past_due": int(line["days_past_due"]),
                    "pay_link": str(d.get("pay_link") or inv.pay_link),
                }
            )
        )
    return case.model_copy(update={"invoices": invoices, "pay_link": invoices[0].pay_link})


def _detail_calls(case: CaseFile) -> list[ToolCallPart]:
    return [
        ToolCallPart("invoice_detail", {"invoice_number": inv.number}, tool_call_id=f"inv{i}")
        for i, inv in enumerate(case.invoices)
    ]


def _draft_args(case: CaseFile, style: Style) -> dict[str, Any]:
    subject, body, book = render(case, style)
    facts = stated_facts(case, style)
    return {
        "channel": case.channel.value,
        "recipient": case.recipient or "",
        "subject": subject[:200],
        "body": body,
        "invoice_numbers": facts["invoice_numbers"],
        "amounts": facts["amounts"],
        "dates": [d.isoformat() for d in facts["dates"]],
        "pay_link": facts["pay_link"],
        "language": book.language,
        "tone": "formal" if style.formal else style.tone,
    }


def _drafter(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    case = next((c for t in _user_texts(messages) if (c := parse_case(t)) is not None), None)
    if case is None:
        return _fail(messages, "no case file in the prompt")
    details = _returns(messages, "invoice_detail")
    if details:  # figures read with the tool (a conversation that asked) win over the case file
        case = _refresh_case(case, details)
    elif any(not inv.pay_link for inv in case.invoices):  # the case file lacks what it needs
        return _respond(messages, list(_detail_calls(case)), 80)
    args = _draft_args(case, Style(tone=case.tone))
    return _respond(messages, [ToolCallPart(DRAFT_TOOL, args)], len(args["body"]))


# --- the reviser ---------------------------------------------------------------------------------

_SHORT = r"\b(short(er)?|brief(er)?|concise|trim|k[uü]rzer|plus court|m[aá]s corto|shorten)\b"
_LONG = r"\b(longer|more detail(ed)?|ausf[uü]hrlicher|plus long|m[aá]s largo)\b"
_FORMAL = r"\b(more formal|formal(er)?|f[oö]rmlicher|formeller|plus formel|m[aá]s formal|polite)\b"
_FRIENDLY = (
    r"\b(friendl(y|ier)|warm(er)?|less formal|casual|informal|freundlicher|plus amical"
    r"|m[aá]s amable|softer)\b"
)
_FIRM = r"\b(firm(er)?|more direct|stronger|strenger|plus ferme|m[aá]s firme)\b"
_PROMISE = r"\b(promise|promised|zusage|zahlungszusage|promesse|promesa)\b"
_PLAN = r"\b(plan|installment|instalment|rate|ratenplan|[eé]ch[eé]ancier|cuota)\b"


def _find_promise(case: CaseFile, instruction: str) -> CaseCommitment | None:
    """The promise an instruction points at: by its date when one is given, else the latest."""
    if not case.promises:
        return None
    stated = extract_facts(instruction, language="en", as_of=case.as_of).dates
    stated += extract_facts(instruction, language=case.language, as_of=case.as_of).dates
    if stated:
        for p in case.promises:
            if p.date in stated:
                return p
        return None
    open_ones = [p for p in case.promises if p.status == "open"]
    return (open_ones or case.promises)[0]


def apply_instruction(
    case: CaseFile, style: Style, instruction: str
) -> tuple[CaseFile, Style, list[str], list[str]]:
    """Apply one operator instruction: (case, style, what was done, what could not be done)."""
    low = instruction.lower()
    done: list[str] = []
    missed: list[str] = []
    for rx, lang in LANG_WORDS:
        if re.search(rx, low):
            if lang == case.language:
                done.append(f"already in {lang}")
            else:
                case = relocalize(case, lang)
                done.append(f"rewritten in {lang}")
            break
    if re.search(_SHORT, low):
        style.length = "short"
        done.append("shorter")
    elif re.search(_LONG, low):
        style.length = "normal"
        done.append("full length")
    if re.search(_FORMAL, low):
        style.formal = True
        done.append("more formal")
    elif re.search(_FRIENDLY, low):
        style.formal = False
        style.tone = "friendly"
        done.append("friendlier")
    elif re.search(_FIRM, low):
        style.tone = "firm"
        done.append("firmer")
    if re.search(_PROMISE, low):
        promise = _find_promise(case, instruction)
        if promise is None:
            missed.append("no promise-to-pay on that date in the ledger, so none is mentioned")
        else:
            style.mention_promise = promise
            done.append(f"mentions the promise of {promise.amount_text} for {promise.date_text}")
    elif re.search(_PLAN, low):
        if case.installment is None:
            missed.append("no payment plan installment on this draft to mention")
        else:
            style.mention_plan = True
            done.append("mentions the payment plan")
    if not done and not missed:
        missed.append(
            "instruction not understood by the offline model (it understands: shorter, more "
            "formal, friendlier, firmer, mention the promise [from DATE], mention the plan, "
            "in English/German/French/Spanish)"
        )
    return case, style, done, missed


def _reviser(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    texts = _user_texts(messages)
    case = next((c for t in texts if (c := parse_case(t)) is not None), None)
    if case is None:
        return _fail(messages, "no case file in the prompt")
    instruction = next(
        (s for t in texts if (s := _section(t, "operator_instruction")) is not None), ""
    )
    details = _returns(messages, "invoice_detail")
    if not details:
        calls = list(_detail_calls(case))
        if re.search(_PROMISE, instruction.lower()):
            calls.append(
                ToolCallPart("promise_history", {"customer_id": case.customer_id}, tool_call_id="p")
            )
        return _respond(messages, calls, 80)
    case = _refresh_case(case, details)
    history = _returns(messages, "promise_history")
    if history and isinstance(history[-1], list):
        case = case.model_copy(
            update={
                "promises": [
                    CaseCommitment(
                        id=int(p["id"]),
                        amount_minor=int(p["amount_minor"]),
                        currency=p["currency"],
                        amount_text=format_amount(
                            int(p["amount_minor"]), p["currency"], case.locale
                        ),
                        date=date.fromisoformat(p["promised_date"]),
                        date_text=format_day(date.fromisoformat(p["promised_date"]), case.locale),
                        status=str(p["status"]),
                        invoice_numbers=list(p.get("invoice_numbers", [])),
                    )
                    for p in history[-1]
                ]
            }
        )
    style = Style(tone=case.tone)
    done: list[str] = []
    missed: list[str] = []
    for earlier in case.revision_instructions:
        case, style, _, _ = apply_instruction(case, style, earlier)
    case, style, done, missed = apply_instruction(case, style, instruction)
    args = _draft_args(case, style)
    note = "; ".join(done + [f"not done: {m}" for m in missed])
    args["note"] = note[:300]
    return _respond(messages, [ToolCallPart(REVISION_TOOL, args)], len(args["body"]))


# --- the inspector -------------------------------------------------------------------------------


def _money(minor: int, currency: str) -> str:
    return format_amount(minor, currency, "en_US")


#: how an inspector rule answers: action, rationale, priority, confidence
_Answer = Callable[[str, str, str, float], dict[str, Any]]


def _dispute_or_block(
    case: InspectCase, disputes: list[dict[str, Any]], out: _Answer
) -> dict[str, Any] | None:
    """Disputes first (escalate one past its SLA or with Legal, else hold), then a draft the
    guardrails block: none of these may be chased, whatever else the account says."""
    breached = [d for d in disputes if d.get("sla_breached")]
    if breached or any(d["status"] == "escalated_legal" for d in disputes):
        d = (breached or disputes)[0]
        return out(
            "escalate_dispute",
            f"The {labels.label(d['reason']).lower()} dispute on invoice {d['invoice_number']} "
            f"is {'past its SLA' if breached else 'with Legal'} ({labels.label(d['status'])}); "
            "Legal should take it over. No dunning while it is open.",
            "urgent" if breached else "high",
            0.85,
        )
    if disputes:
        d = disputes[0]
        return out(
            "hold",
            f"Invoice {d['invoice_number']} is disputed ({labels.label(d['reason']).lower()}, "
            f"{labels.label(d['status']).lower()}): it must not be chased until the dispute is "
            "resolved.",
            "normal",
            0.9,
        )
    if case.decision_outcome == "block" or case.grounding_ok is False:
        rules = "; ".join(labels.rule_label(r) for r in case.decision_rule_ids[:4])
        return out(
            "hold",
            f"The guardrails block this draft ({rules or 'its figures do not match the ledger'}); "
            "fix or reject it rather than send it.",
            "normal",
            0.8,
        )
    return None


def _commitment_rule(
    promises: list[dict[str, Any]], plans: list[dict[str, Any]], nums: list[str], out: _Answer
) -> dict[str, Any] | None:
    """Commitments next: an open promise-to-pay covering the invoices pauses chasing; a broken
    promise or a missed installment calls for a call, not another e-mail."""
    lapsed = [p for p in promises if p.get("lapsed") or p.get("status") == "missed"]
    open_p = [p for p in promises if p.get("status") == "open" and not p.get("lapsed")]
    covered = {n for p in open_p for n in p.get("invoice_numbers", [])}
    if open_p and (not nums or set(nums) <= covered):
        p = open_p[0]
        return out(
            "hold",
            f"An open promise to pay {_money(int(p['amount_minor']), p['currency'])} by "
            f"{labels.day(p['promised_date'])} (grace to {labels.day(p['deadline'])}) covers "
            "these invoices; chasing is paused until then.",
            "low",
            0.85,
        )
    if lapsed:
        p = lapsed[0]
        return out(
            "call",
            f"The promise to pay {_money(int(p['amount_minor']), p['currency'])} by "
            f"{labels.day(p['promised_date'])} was not kept; a call gets a new commitment faster "
            "than another e-mail.",
            "high",
            0.8,
        )
    missed_plans = [p for p in plans if int(p.get("missed_installments", 0)) > 0]
    if missed_plans:
        p = missed_plans[0]
        return out(
            "call",
            f"Payment plan {p['id']} has {p['missed_installments']} missed installment(s); "
            "call before it defaults.",
            "high",
            0.8,
        )
    return None


def _exposure_rule(
    invoices: list[dict[str, Any]],
    plans: list[dict[str, Any]],
    max_days: int,
    cur: str,
    amount: int,
    out: _Answer,
) -> dict[str, Any]:
    """Last, by how much is open and how late: a plan for a large, old balance, a call when
    very late, else the cadence reminder."""
    if not invoices:
        return out("hold", "Nothing open to chase on this item.", "low", 0.9)
    big = amount >= 1_000_000  # 10,000.00 in the currency's minor units
    if max_days > 60 and big and not plans:
        return out(
            "propose_plan",
            f"{_money(amount, cur)} is open and up to {max_days} days past due; a payment plan "
            "is likelier to recover it than more reminders.",
            "high",
            0.7,
        )
    if max_days > 45:
        return out(
            "call",
            f"Invoices up to {max_days} days past due ({_money(amount, cur)} open) after the "
            "e-mail reminders; a call is the next step.",
            "high" if big else "normal",
            0.7,
        )
    return out(
        "send_reminder",
        f"{len(invoices)} open invoice(s), {_money(amount, cur)}, up to {max_days} days past due, "
        "no dispute or promise in the way: the cadence reminder can go out.",
        "normal" if max_days > 0 else "low",
        0.75,
    )


def inspect_account(case: InspectCase, acct: dict[str, Any]) -> dict[str, Any]:
    """The next best action from an Account 360 (the offline inspector's rules, in order)."""
    numbers = set(case.invoice_numbers)
    invoices = [i for i in acct.get("open_invoices", []) if not numbers or i["number"] in numbers]
    disputes = [
        d for d in acct.get("open_disputes", []) if not numbers or d["invoice_number"] in numbers
    ]
    promises = acct.get("promises", [])
    plans = acct.get("plans", [])
    max_days = max((int(i["days_past_due"]) for i in invoices), default=0)
    exposure: dict[str, int] = {}
    for i in invoices:
        exposure[i["currency"]] = exposure.get(i["currency"], 0) + int(i["balance_minor"])
    cur, amount = max(exposure.items(), key=lambda kv: kv[1], default=("USD", 0))
    nums = sorted(i["number"] for i in invoices)[:20]

    def out(action: str, why: str, priority: str, confidence: float) -> dict[str, Any]:
        return {
            "action": action,
            "rationale": why[:600],
            "priority": priority,
            "confidence": confidence,
            "invoice_numbers": nums,
        }

    return (
        _dispute_or_block(case, disputes, out)
        or _commitment_rule(promises, plans, nums, out)
        or _exposure_rule(invoices, plans, max_days, cur, amount, out)
    )


def _inspector(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    raw = next((s for t in _user_texts(messages) if (s := _section(t, "case_file"))), None)
    if raw is None:
        return _fail(messages, "no case file in the prompt")
    try:
        case = InspectCase.model_validate_json(raw)
    except ValueError:
        return _fail(messages, "the case file is not an inspector case")
    acct = _returns(messages, "account_360")
    if not acct:
        call = ToolCallPart("account_360", {"customer_id": case.customer_id}, tool_call_id="a")
        return _respond(messages, [call], 40)
    args = inspect_account(case, acct[-1] if isinstance(acct[-1], dict) else {})
    return _respond(messages, [ToolCallPart(INSPECTOR_TOOL, args)], len(args["rationale"]))


# --- reply triage --------------------------------------------------------------------------------
#
# Keyword sets per language (en, de, fr, es, and the commonest nl/it/pt phrases), matched on the
# reply folded to lower case without accents ("Büro" -> "buro", "reçu" -> "recu", "ß" -> "ss").
# They are phrase patterns a person would recognise, not the eval's sentences.

_OOO = re.compile(
    r"out of (the )?office|\booo\b|automatic reply|auto-?reply|away from (the |my )?(office|desk)"
    r"|on (annual |parental |maternity |paternity |sick |medical )?leave|on (vacation|holiday)"
    r"|i (will be|am) back (in the office )?on"
    r"|abwesen|ausser haus|nicht im buro|nicht erreichbar|im urlaub|in urlaub"
    r"|automatische antwort|abwesenheitsnotiz"
    r"|absente? du bureau|absente? jusqu|en conges?\b|en vacances|reponse automatique"
    r"|acces limite|je serai de retour|de retour le"
    r"|fuera de la oficina|de vacaciones|respuesta automatica|acceso limitado|estare de vuelta"
    r"|regresare el|volvere el"
    r"|afwezig|niet op kantoor|met vakantie|fuori ufficio|in ferie|fora do escritorio|de ferias"
)
_PAID = re.compile(
    r"already (been )?(paid|settled|sent|wired|transferred|remitted)"
    r"|(has|have|was|were) (already )?been (paid|settled|remitted|transferred|wired|sent)"
    r"|\b(we|i) (have |had )?(already )?(paid|settled|wired|remitted|transferred|sent the payment"
    r"|made the payment)\b"
    r"|payment (was|has been|went|is|has gone) (already )?(sent|made|out|issued|initiated"
    r"|processed|on its way)"
    r"|\b(check|cheque|wire|transfer|ach payment|remittance)\b.{0,40}\b(was|were|has been|have"
    r" been|went)\b.{0,20}\b(mailed|sent|posted|issued|made|initiated|out)\b"
    r"|\b(mailed|sent|posted) (you )?(a |the |our )?(check|cheque)\b"
    r"|\b(we|i) (have |had |just )?(already )?(sent|mailed|posted|wired|made|initiated|released"
    r"|issued) (you )?(the |a |our |your )?(payment|wire|transfer|check|cheque|remittance|ach)\b"
    r"|\b(was|were|has been|have been) (remitted|wired|transferred)\b"
    # de
    r"|\b(bereits|schon)\b.{0,30}\b(bezahlt|uberwiesen|beglichen|angewiesen)"
    r"|\b(wurde|wurden|ist|sind|haben|habe)\b.{0,40}\b(bezahlt|uberwiesen|beglichen|angewiesen)\b"
    r"|\bzahlung (ist|wurde)\b.{0,20}\b(erfolgt|veranlasst|ausgefuhrt|angewiesen)"
    # fr
    r"|\bdeja (ete )?(paye|regle|vire|verse)e?s?\b"
    r"|\b(avons|ai|a ete|ont ete)\b.{0,30}\b(paye|regle|vire|verse)e?s?\b"
    r"|\b(paiement|virement|cheque|reglement)\b.{0,30}\b(a ete|est parti|ete)\b.{0,15}"
    r"\b(effectue|envoye|emis|fait|expedie|poste)e?\b"
    # es
    r"|\bya (lo |la |los |las )?(hemos |he |habiamos )?(pagado|abonado|transferido|liquidado)\b"
    r"|\bya pagamos\b|\b(hemos|he) (pagado|abonado|transferido|liquidado)\b"
    r"|\b(pago|transferencia|cheque)\b.{0,30}\b(fue|ha sido|se ha)\b.{0,15}"
    r"\b(realizad|enviad|efectuad|emitid|hech)[oa]\b"
)
#: A negation in the same clause turns a claim around ("it has not been paid yet").
_NEGATION = re.compile(
    r"(\bnot\b|n't\b|\bnever\b|\bnicht\b|\bkein\w*|\bpas\b|\bjamais\b|\bno\b|\bnunca\b"
    r"|\btodavia\b|\baun\b)[^.!?,;\n]{0,30}$"
)
_DISPUTE: dict[str, re.Pattern[str]] = {
    reason: re.compile(rx)
    for reason, rx in {
        "pricing": r"overcharg|wrong (unit )?(price|rate)|(price|rate) (is |was )?(wrong|incorrect"
        r"|higher|too high)|(agreed|contract(ed)?|quoted) (price|rate)|falsche[rn]? preis"
        r"|preis (ist |war )?(falsch|zu hoch)|vereinbarte[nr]? preis"
        r"|(prix|tarif) (est |etait )?(incorrect|errone|faux|trop eleve)|mauvais (prix|tarif)"
        r"|(prix|tarif) convenu|precio (es |era )?(incorrecto|equivocado|demasiado alto)"
        r"|precio acordado",
        "quantity": r"quantit|\bmenge\b|cantidad|too many|zu viele|trop de|demasiad",
        "not_received": r"never (received|arrived|delivered)|not (been )?(received|delivered)"
        r"|did not (receive|arrive)|didn't (receive|arrive)"
        r"|(nicht|nie|niemals) (erhalten|geliefert|angekommen|bekommen)"
        r"|pas (ete )?(recu|livre)|jamais (recu|livre)|no (lo |la |los |las )?(hemos )?recibid"
        r"|no (ha |han )?llegad|no entregad",
        "duplicate_billing": r"duplicate|twice|billed two|double[- ]billed|doppelt|zweimal"
        r"|en double|deux fois|duplicad|dos veces",
        "quality": r"damaged|defect|broken|faulty|not working|poor quality|beschadigt|defekt"
        r"|mangelhaft|endommag|defectueu|defectuos|danad",
        "tax": r"\b(vat|tax|mwst|ust|tva|iva)\b (rate |amount )?(is |was |ist )?(wrong|incorrect"
        r"|falsch|errone|incorrect[oa])",
        "other": r"\bdisput|\bcontest|\bincorrect|\bwrong\b|\berror\b|mistake|reklamation|einspruch"
        r"|widerspruch|fehlerhaft|\bfalsch|litige|errone|erreur|disputa|reclamaci|equivocad"
        r"|corrected invoice|credit note|correct (the|this) invoice|fix (the|this) invoice"
        r"|korrigierte rechnung|gutschrift|facture (corrigee|rectificative)|un avoir"
        r"|factura (corregida|rectificativa)|nota de credito",
    }.items()
}
#: Countable things a quantity dispute is about (two different counts of one kind, contrasted).
_COUNTED = re.compile(
    r"\b(\d{1,6})\s+(licen[cs]es?|seats?|users?|units?|items?|pieces?|pcs|hours?|boxes|pallets?"
    r"|cartons?|subscriptions?|devices?|lizenzen|platze|nutzer|einheiten|stuck|stunden"
    r"|paletten|postes|unites|heures|licencias|puestos|usuarios|unidades|horas|piezas|cajas)\b"
)
_CONTRAST = re.compile(
    r"\b(but|only|not|instead|however|aber|nur|statt|nicht|mais|seulement|au lieu|pero|solo"
    r"|en lugar)\b"
)
_CONDITIONAL = re.compile(
    r"\b(once|after|as soon as|when|if|sobald|nachdem|wenn|falls|des que|une fois|apres|quand"
    r"|cuando|una vez|en cuanto|tan pronto)\b.{0,60}\b(fix|fixed|correct(ed)?|resolved|credit"
    r"|sorted|reissued|korrigiert|gutschrift|geklart|corrige|rectifi|corregid|resuelt)"
)
_PROMISE_WORDS = re.compile(
    r"\b(will|'ll|shall|going to|can|plan to|intend to|expect to)\s+(be able to\s+)?(pay"
    r"|transfer|remit|wire|settle|send (the |a |our )?payment|release (the )?payment"
    r"|process (the )?payment)\b|payment will (be made|go out|be sent|be released)|will be paid"
    r"|scheduled (for|on)|pay (it )?(by|on)"
    r"|werden? .{0,60}(zahlen|uberweisen|bezahlen)|zahlen wir|uberweisen wir"
    r"|nous (allons )?pa(ierons|yer)|paiement (sera|est prevu)|reglerons|virerons"
    r"|pagaremos|vamos a pagar|el pago se (hara|realizara)|transferiremos"
)
_QUESTION = re.compile(
    r"\?|could you|can you|would you|please (send|provide|confirm|resend|share|advise)"
    r"|copy of|bank details|remittance|purchase order|\bpo\b|\bw-?9\b|statement of account"
    r"|konnen sie|konnten sie|bitte (senden|schicken|bestatigen)|pourriez-vous|pouvez-vous"
    r"|merci de (nous )?(envoyer|confirmer)|podria|pueden|puede enviar|por favor (env|confirm)"
)


def _affirmed(rx: re.Pattern[str], folded: str) -> bool:
    """``rx`` is found and not negated in its clause ("has not been paid" claims nothing)."""
    for m in rx.finditer(folded):
        before = folded[max(0, m.start() - 40) : m.start()]
        if _NEGATION.search(before) or re.search(r"\b(not|nicht|pas|no)\b", m.group()):
            continue
        return True
    return False


def dispute_reason(folded: str) -> str | None:
    """Why the payer contests the invoice (``tools.commitments.disputes.REASONS`` keys), or None."""
    for reason, rx in _DISPUTE.items():
        if reason == "quantity" and _quantity_mismatch(folded):
            return reason
        if rx.search(folded):
            return reason
    return None


def _quantity_mismatch(folded: str) -> bool:
    """Two different counts of things, contrasted by a word such as "but" or "only"."""
    counts = {m.group(1) for m in _COUNTED.finditer(folded)}
    return len(counts) >= 2 and bool(_CONTRAST.search(folded))


def classify_reply(folded: str, *, has_future_date: bool) -> str:
    """The class of a (folded) reply: out_of_office, paid_claim, dispute, promise, question or
    other. Order matters: an auto-reply quoting an invoice is still an auto-reply; "paid" beats
    a promise; a dispute beats a promise that is conditional or has no date ("we will pay once
    it is fixed")."""
    if _OOO.search(folded):
        return "out_of_office"
    if _affirmed(_PAID, folded):
        return "paid_claim"
    promise = bool(_PROMISE_WORDS.search(folded)) and has_future_date
    if dispute_reason(folded) is not None and not (promise and not _CONDITIONAL.search(folded)):
        return "dispute"
    if promise:
        return "promise"
    if _QUESTION.search(folded):
        return "question"
    return "other"


def _reply_facts(case: TriageCase, own: str, known: list[str]) -> tuple[StatedFacts, str]:
    """The facts of the payer's own words, and the language they were read in (a short reply's
    dates are read in every supported language: one month name is too little to detect it)."""
    # The reply may not be in the customer's usual language: read it in the language it is in.
    seen_language = detect_language(own)
    language = seen_language or case.language
    facts = extract_facts(
        own,
        language=language,
        as_of=case.as_of,
        known_invoice_numbers=known,
        shapes=invoice_shapes(known),
    )
    others = {case.language} if seen_language else {case.language, "en", "de", "fr", "es"}
    for other in sorted(others - {language}):  # short replies: any supported language's months
        facts.dates += [
            d
            for d in extract_facts(own, language=other, as_of=case.as_of).dates
            if d not in facts.dates
        ]
    return facts, language


def _stated_amount(facts: StatedFacts, currencies: list[str]) -> dict[str, Any] | None:
    """The first amount the reply states in one of the case's currencies, in minor units (an
    amount without a currency sign is read in the case's currency)."""
    amount: dict[str, Any] | None = None
    for a in facts.amounts:
        for cur in a.currencies or currencies:
            if cur in currencies:
                minor = int(Decimal(a.value).scaleb(exponent(cur)).to_integral_value())
                amount = {"amount_minor": minor, "currency": cur}
                break
        if amount:
            break
    return amount


def _proposed_changes(
    case: TriageCase,
    result: dict[str, Any],
    facts: StatedFacts,
    future: list[date],
    targets: list[str],
    amount: dict[str, Any] | None,
    folded: str,
) -> list[dict[str, Any]]:
    """The summary (into ``result``) and the ledger changes to propose for the reply's class:
    proposals only, a person applies them."""
    classification = result["classification"]
    changes: list[dict[str, Any]] = []
    if classification == "out_of_office":
        result["return_date"] = future[0].isoformat() if future else None
        result["summary"] = "Automatic out-of-office reply" + (
            f"; back on {future[0].isoformat()}." if future else "."
        )
        if future:
            changes.append(
                {"kind": "pause_outreach", "on_date": future[0].isoformat(),
                 "detail": "Contact is away; hold outreach until they are back."}
            )  # fmt: skip
    elif classification == "paid_claim":
        result["summary"] = "The payer says the invoice(s) are already paid; check the payments."
        changes.append(
            {"kind": "verify_payment", "invoice_numbers": targets, "amount": amount,
             "on_date": facts.dates[0].isoformat() if facts.dates else None,
             "detail": "Match the claimed payment against received payments before any change."}
        )  # fmt: skip
    elif classification == "dispute":
        reason = dispute_reason(folded) or "other"
        result["dispute_reason"] = reason
        result["summary"] = f"The payer contests the invoice(s): {reason.replace('_', ' ')}."
        changes.append(
            {"kind": "open_dispute", "invoice_numbers": targets, "reason": reason,
             "detail": "Open a dispute so the invoice is not chased while it is checked."}
        )  # fmt: skip
    elif classification == "promise":
        result["promise_date"] = future[0].isoformat()
        if amount is None and targets:
            inv = next(i for i in case.invoices if i.number == targets[0])
            if len(targets) == 1:
                amount = {"amount_minor": inv.balance_minor, "currency": inv.currency}
        result["promise_amount"] = amount
        shown = (
            format_amount(amount["amount_minor"], amount["currency"], "en_US") if amount else "?"
        )
        result["summary"] = f"Promise to pay {shown} on {future[0].isoformat()}."
        changes.append(
            {"kind": "log_promise", "invoice_numbers": targets, "amount": amount,
             "on_date": future[0].isoformat(),
             "detail": "Log this promise-to-pay; chasing pauses until its date plus grace."}
        )  # fmt: skip
    elif classification == "question":
        result["summary"] = "The payer asks a question; a collector should answer it."
        changes.append(
            {"kind": "answer_question", "invoice_numbers": targets,
             "detail": "Reply to the payer's question."}
        )  # fmt: skip
    else:
        result["summary"] = "Nothing to record; a collector may read it."
    return changes


def _flag_summary(result: dict[str, Any], signals: list[str], foreign: list[str]) -> None:
    """Warn in the summary of a suspected injection and of invoice numbers that are not this
    customer's, so the reviewer reads the whole reply before acting on it."""
    if signals:
        result["summary"] = (
            "Suspected prompt injection (" + ", ".join(signals) + "): only the payer's own words "
            "before it were read; a person should read the whole reply. " + result["summary"]
        )[:400]
    if foreign:
        result["summary"] = (
            result["summary"]
            + f" Ignored numbers that are not this customer's: {', '.join(foreign)}."
        )[:400]


def triage_text(case: TriageCase, text: str) -> dict[str, Any]:
    """The offline triage rules: classify a reply and propose (never apply) ledger changes.

    A reply with an injection signal is read only up to the injected sentence (the payer's own
    words before it), and flagged; nothing after it is classified or proposed.
    """
    signals = injection_signals(text)
    own = before_injection(text) if signals else text
    known = [i.number for i in case.invoices]
    facts, language = _reply_facts(case, own, known)
    everything = extract_facts(
        text, language=language, known_invoice_numbers=known, shapes=invoice_shapes(known)
    )
    ours = [n for n in facts.invoice_numbers if n in known]
    foreign = [n for n in everything.invoice_numbers if n not in known]
    future = sorted(d for d in facts.dates if d >= case.as_of)
    currencies = case.currencies or sorted({i.currency for i in case.invoices}) or ["USD"]
    amount = _stated_amount(facts, currencies)
    targets = ours or ([known[0]] if len(known) == 1 else [])
    folded = fold_text(own)
    classification = (
        classify_reply(folded, has_future_date=bool(future)) if own.strip() else "other"
    )
    result: dict[str, Any] = {
        "classification": classification,
        "summary": "",
        "invoice_numbers": ours + [n for n in foreign if n not in ours],  # vetting drops foreign
        "promise_amount": None,
        "promise_date": None,
        "dispute_reason": None,
        "return_date": None,
        "injection_suspected": bool(signals),
        "proposed_changes": [],
    }
    changes = _proposed_changes(case, result, facts, future, targets, amount, folded)
    _flag_summary(result, signals, foreign)
    result["proposed_changes"] = changes
    result["summary"] = result["summary"] or "Reply read."
    return result


def _triage(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    texts = _user_texts(messages)
    raw = next((s for t in texts if (s := _section(t, "case_file"))), None)
    reply = next((s for t in texts if (s := unfence(t)) is not None), None)
    if raw is None or reply is None:
        return _fail(messages, "no case file or no payer text in the prompt")
    try:
        case = TriageCase.model_validate_json(raw)
    except ValueError:
        return _fail(messages, "the case file is not a triage case")
    args = triage_text(case, reply)
    return _respond(messages, [ToolCallPart(TRIAGE_TOOL, args)], len(args["summary"]))


# --- the remittance reader -----------------------------------------------------------------------
#
# A general reading of remittance text: invoice-number-like tokens are looked up with the agent's
# ``find_invoices`` tool; each open invoice found owns the text up to the next one (or to a blank
# line or a totals line), and the amounts in that stretch say what it was paid: a labelled paid /
# net amount, else gross minus the deductions the text marks (a minus sign, brackets, or words
# such as "less", "credit", "discount", "Skonto"), else a column header's paid column, else a
# single amount. What does not add up is the remainder; what cannot be read is no split at all.

_R_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[./]\d{1,2}[./]\d{2,4}\b")
_R_INVOICE = re.compile(r"(?<![\w.,])(?:[A-Za-z]{1,8}[-/#. ]?)?\d{3,}(?:[-/]\d+)*(?![\w]|[.,]\d)")
_R_AMOUNT = re.compile(
    r"(?P<neg>[-\u2212\u2013]\s?|\(\s?)?(?:[A-Z]{3}\s?|[$\u20ac\u00a3]\s?)?"
    r"(?<![\d.,])(?P<num>\d{1,3}(?:[,.'\u00a0 ]\d{3})+(?:[.,]\d{1,3})?|\d+[.,]\d{1,3})"
    r"(?![\d%]|[.,]\d)"
)
_R_DEDUCT = re.compile(
    r"\b(less|minus|deduct\w*|discount\w*|credit\w*|cn|short\w*|fee\w*|charge\w*|withh\w*"
    r"|retention|abz\w*|skonto|rabatt|gutschrift\w*|einbehalt\w*|avoir|remise|escompte"
    r"|descuento|abono|nota de cr\w*)\b"
)
_R_PAID = re.compile(
    r"\b(amount paid|paid amount|payment amount|net amount|paid|net|payment|remitted|bezahlt"
    r"|zahlbetrag|netto|paye|payee|montant regle|pagado|importe pagado)\b"
)
_R_TOTAL = re.compile(r"\b(total|sum|summe|gesamt\w*|montant total|importe total)\b")
_R_COLUMN = re.compile(
    r"(?P<paid>amount paid|paid amount|payment amount|net amount|paid|net|payment|bezahlt"
    r"|zahlbetrag|netto)|(?P<deduct>deduction\w*|discount|credit\w*|skonto|abzug|rabatt)"
    r"|(?P<gross>gross|invoice amount|original amount|amount|betrag|brutto|montant|importe)"
)


def _r_minor(num: str, exp: int) -> int | None:
    """``1,234.56`` / ``1.234,56`` / ``1 234,56`` / ``1234.5`` as minor units (None: not money)."""
    num = num.replace("\u00a0", " ")
    m = re.search(r"[.,](\d{1,3})$", num)
    if m and len(m.group(1)) != 3:  # a decimal part (three digits after it is a thousands group)
        whole, frac = num[: m.start()], m.group(1)
    else:
        whole, frac = num, ""
    if len(frac) > exp:
        return None
    digits = re.sub(r"[,.' ]", "", whole)
    if not digits.isdigit():
        return None
    return int(digits) * 10**exp + (int(frac.ljust(exp, "0")) if frac else 0)


def _r_amounts(text: str, exp: int) -> list[tuple[int, int, bool, str]]:
    """(position, minor, marked as a deduction, the words before it) for each amount (invoice
    and credit-note numbers are masked first: "CN-301 150.00" is not 301,150.00)."""
    text = _R_INVOICE.sub(lambda m: " " * len(m.group()), text)
    out: list[tuple[int, int, bool, str]] = []
    last = 0
    for m in _R_AMOUNT.finditer(text):
        minor = _r_minor(m.group("num"), exp)
        if minor is None or minor == 0:
            continue
        before = fold_text(text[last : m.start()])
        marked = bool(m.group("neg")) or bool(_R_DEDUCT.search(before))
        out.append((m.start(), minor, marked, before))
        last = m.end()
    return out


def _r_columns(header_text: str) -> list[str]:
    """The amount columns a table header names (paid / deduct / gross), in order: the words
    after the last amount before the first invoice (stored remittance text is one line)."""
    after = header_text
    for m in _R_AMOUNT.finditer(header_text):
        after = header_text[m.end() :]
    cols = [k for m in _R_COLUMN.finditer(fold_text(after)) for k, v in m.groupdict().items() if v]
    return cols if len(cols) >= 2 else []


def _before_signal(text: str) -> str:
    """The payer's text up to where an injection signal starts (found by bisection, since a
    remittance stored as one line has no sentences to cut at: "150.00 Note to the AI ...")."""
    if not injection_signals(text):
        return text
    lo, hi = 0, len(text)  # the shortest prefix that carries a signal ends where it ends
    while lo < hi:
        mid = (lo + hi) // 2
        if injection_signals(text[:mid]):
            hi = mid
        else:
            lo = mid + 1
    end, lo, hi = lo, 0, lo  # the latest start from which it is still there
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if injection_signals(text[mid:end]):
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _r_paid(segment: str, exp: int, columns: list[str]) -> tuple[int | None, str]:
    """What a stretch of text says was paid on its invoice, and how it was read."""
    amounts = _r_amounts(segment, exp)
    plain = [a for a in amounts if not a[2]]
    marked = [a for a in amounts if a[2]]
    labelled = [a for a in plain if _R_PAID.search(a[3])]
    cut = sum(a[1] for a in marked)
    if labelled:
        return labelled[-1][1], "the amount marked as paid"
    if len(amounts) >= 2 and len(columns) >= len(amounts):
        cols = columns[-len(amounts) :]  # the table's columns are the header's last words
        values = [a[1] for a in amounts]
        by = dict(zip(cols, values, strict=True))
        if "paid" in by:
            return by["paid"], "the paid column"
        if "gross" in by:
            deductions = sum(v for k, v in zip(cols, values, strict=True) if k == "deduct")
            return by["gross"] - deductions, "gross less the deductions column"
    if len(plain) >= 3 and plain[0][1] - sum(a[1] for a in plain[1:-1]) - cut == plain[-1][1]:
        return plain[-1][1], "gross less deductions, as the text computes it"
    if len(plain) == 1:
        if cut:
            return plain[0][1] - cut, "less the deduction the text states"
        return plain[0][1], "the amount listed"
    if len(plain) == 2 and not cut and plain[1][1] <= plain[0][1]:
        return plain[1][1], "the second of two amounts (paid after gross)"
    return None, "no amount could be read"


def _r_segments(
    masked: str, anchors: list[tuple[int, int, dict[str, Any]]], exp: int
) -> tuple[list[str], bool]:
    """The stretch of text each invoice owns: after it up to the next one (a totals word ends
    the last), or, when the text writes amounts before the invoices ("450.00 for INV-1 and
    300.00 for INV-2": the last invoice has nothing after it, an amount leads the first), the
    stretch before it."""

    def cut(text: str) -> str:
        brk = re.search(r"\n\s*\n|" + _R_TOTAL.pattern, text, re.I)
        return text[: brk.start()] if brk else text

    after = [
        cut(masked[end : anchors[i + 1][0] if i + 1 < len(anchors) else len(masked)])
        for i, (_, end, _) in enumerate(anchors)
    ]
    head = masked[: anchors[0][0]]
    leading = list(_R_AMOUNT.finditer(head))
    if _r_amounts(after[-1], exp) or not leading:
        return after, False
    tail = head[leading[-1].end() :]  # "450.00 for " / "450.00 on invoice "
    if len(tail) > 40 or re.fullmatch(r"\s*(?:[^\W\d]+[\s:]*){0,3}", tail) is None:
        return after, False
    before = [head[leading[-1].start() :]]
    before += [masked[anchors[i - 1][1] : anchors[i][0]] for i in range(1, len(anchors))]
    return before, True


def _r_anchors(
    masked: str, currency: str, found: list[dict[str, Any]], notes: list[str]
) -> list[tuple[int, int, dict[str, Any]]]:
    """Where the text names an open invoice of the payment's currency (each once), with what
    ``find_invoices`` said of it; why the other invoices it names cannot be paid goes in
    ``notes``."""
    status = {str(f.get("asked")): f for f in found if isinstance(f, dict)}
    anchors: list[tuple[int, int, dict[str, Any]]] = []
    seen: set[str] = set()
    for m in _R_INVOICE.finditer(masked):
        f = status.get(m.group())
        if f is None or f.get("status") != "open" or f.get("currency") != currency:
            if f is not None and f.get("status") in ("paid", "settled", "written_off", "void"):
                notes.append(f"{f.get('number')} is not open")
            elif f is not None and f.get("status") == "open":
                notes.append(f"{f.get('number')} is in {f.get('currency')}")
            continue
        if f["number"] in seen:
            continue
        seen.add(f["number"])
        anchors.append((m.start(), m.end(), f))
    return anchors


def _r_allocate(
    rows: list[dict[str, Any]],
    amounts_lead: bool,
    exp: int,
    columns: list[str],
    currency: str,
    notes: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """What the text pays on each invoice row: the parts read, the rows with no amount of their
    own (unread), and what was listed above an invoice's open balance (excess), never put on it.
    Why an amount could not be read goes in ``notes``."""
    parts: list[dict[str, Any]] = []
    unread: list[dict[str, Any]] = []
    excess = 0
    # Invoices listed together before one amount ("INV-1, INV-2 and INV-3 1,234.00"; or after
    # it when amounts lead) share it: it is theirs only if it is exactly their balances.
    group: list[dict[str, Any]] = []
    for row in reversed(rows) if amounts_lead else rows:
        if not _r_amounts(row["seg"], exp):
            group.append(row)
            continue
        paid, how = _r_paid(row["seg"], exp, columns)
        if paid is not None and group:
            together = [*group, row]
            if paid == sum(r["balance"] for r in together):
                parts += [{"f": r["f"], "minor": r["balance"], "how": "listed together; "
                           "the amount is their balances"} for r in together]  # fmt: skip
            else:
                names = ", ".join(r["f"]["number"] for r in together)
                notes.append(f"one amount is given for {names} together")
                unread += together
            group = []
            continue
        unread += group
        group = []
        if paid is None or paid <= 0:
            notes.append(f"the amounts for {row['f']['number']} could not be read")
            continue
        if paid > row["balance"]:
            excess += paid - row["balance"]
            how += f"; only {format_amount(row['balance'], currency, 'en_US')} is open"
            paid = row["balance"]
        parts.append({"f": row["f"], "minor": paid, "how": how})
    unread += group
    return parts, unread, excess


def _r_result(
    parts: list[dict[str, Any]],
    left: int,
    excess: int,
    notes: list[str],
    currency: str,
    exp: int,
) -> dict[str, Any]:
    """The reader's answer: the allocations, what is left unexplained and why, and a summary
    with the notes (each once) a person should read."""
    allocations = [
        {
            "invoice_number": p["f"]["number"],
            "amount": str(Decimal(p["minor"]).scaleb(-exp)),
            "reason": f"{format_amount(p['minor'], currency, 'en_US')}: {p['how']}"[:200],
        }
        for p in parts
    ]
    reason = ""
    if left:
        reason = "not explained by the remittance text"
        if excess:
            reason += f" (it lists {format_amount(excess, currency, 'en_US')} above open balances)"
    numbers = ", ".join(p["f"]["number"] for p in parts)
    summary = f"The remittance lists {numbers}"
    if notes:
        summary += f"; {'; '.join(dict.fromkeys(notes))}"
    return {
        "allocations": allocations,
        "remainder": str(Decimal(left).scaleb(-exp)),
        "remainder_reason": reason,
        "summary": (summary + ".")[:300],
    }


def read_remittance(
    text: str, amount_minor: int, currency: str, found: list[dict[str, Any]]
) -> dict[str, Any]:
    """The offline reader's split of ``text`` (see above), given what ``find_invoices`` said."""
    exp = exponent(currency)
    masked = _R_DATE.sub(lambda m: " " * len(m.group()), text)
    notes: list[str] = []
    anchors = _r_anchors(masked, currency, found, notes)

    def nothing(why: str) -> dict[str, Any]:
        return {"allocations": [], "remainder": "0", "remainder_reason": "", "summary": why[:300]}

    if not anchors:
        extra = f" ({'; '.join(dict.fromkeys(notes))})" if notes else ""
        return nothing(f"No open invoice of this payment's currency is named in the text{extra}.")
    if len({a[2].get("customer") for a in anchors}) > 1:
        return nothing("The text names invoices of several customers; a person should split it.")
    columns = _r_columns(masked[: anchors[0][0]])
    segments, amounts_lead = _r_segments(masked, anchors, exp)
    rows: list[dict[str, Any]] = [
        {"f": f, "balance": _r_minor(str(f["balance"]), exp) or 0, "seg": seg}
        for (_, _, f), seg in zip(anchors, segments, strict=True)
    ]
    parts, unread, excess = _r_allocate(rows, amounts_lead, exp, columns, currency, notes)
    order = {r["f"]["number"]: k for k, r in enumerate(rows)}
    parts.sort(key=lambda p: order[p["f"]["number"]])
    left = amount_minor - sum(p["minor"] for p in parts)
    if unread and sum(u["balance"] for u in unread) == left:  # exactly what is left: no guess
        for u in unread:
            parts.append({"f": u["f"], "minor": u["balance"], "how": "named; pays its balance"})
        left = 0
    elif unread:
        notes.append("no amount is given for " + ", ".join(u["f"]["number"] for u in unread))
    if not parts:
        why = f" ({'; '.join(dict.fromkeys(notes))})" if notes else ""
        return nothing(f"No amount in the text can be put on an invoice named{why}.")
    if left < 0:
        listed = format_amount(amount_minor - left, currency, "en_US")
        paid_text = format_amount(amount_minor, currency, "en_US")
        return nothing(f"The amounts listed ({listed}) exceed the payment ({paid_text}).")
    return _r_result(parts, left, excess, notes, currency, exp)


def _retried(messages: Sequence[ModelMessage], tool: str) -> bool:
    """The agent sent ``tool``'s answer back (its output validator refused it): a retry prompt,
    or, in newer pydantic-ai, a return to the output tool (a run that accepts it ends)."""
    return any(
        isinstance(part, RetryPromptPart | ToolReturnPart) and part.tool_name == tool
        for msg in messages
        if isinstance(msg, ModelRequest)
        for part in msg.parts
    )


def _remittance(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    texts = _user_texts(messages)
    raw = next((s for t in texts if (s := _section(t, "case_file"))), None)
    text = next((s for t in texts if (s := unfence(t)) is not None), None)
    if raw is None or text is None:
        return _fail(messages, "no case file or no remittance text in the prompt")
    try:
        case = RemittanceCase.model_validate_json(raw)
    except ValueError:
        return _fail(messages, "the case file is not a bank line")
    own = _before_signal(text)
    if _retried(messages, SPLIT_TOOL):  # the ledger refused the split: say so, once
        args = {"allocations": [], "summary": "The split read from the text does not hold "
                "against the ledger; a person should read the remittance."}  # fmt: skip
        return _respond(messages, [ToolCallPart(SPLIT_TOOL, args)], 80)
    found = _returns(messages, "find_invoices")
    if not found:
        masked = _R_DATE.sub(lambda m: " " * len(m.group()), own)
        tokens = list(dict.fromkeys(m.group() for m in _R_INVOICE.finditer(masked)))[:30]
        if not tokens:
            args = {"allocations": [], "summary": "The text names no invoice number."}
            return _respond(messages, [ToolCallPart(SPLIT_TOOL, args)], 40)
        call = ToolCallPart("find_invoices", {"numbers": tokens}, tool_call_id="find")
        return _respond(messages, [call], 40)
    exp = exponent(case.currency)
    minor = int(Decimal(case.amount).scaleb(exp))
    results = [r for batch in found if isinstance(batch, list) for r in batch]
    split = read_remittance(own, minor, case.currency, results)
    if own != text:
        split["summary"] = ("Text addressed to a model was not read. " + split["summary"])[:300]
    return _respond(messages, [ToolCallPart(SPLIT_TOOL, split)], len(split["summary"]))


# --- the model -----------------------------------------------------------------------------------

_HANDLERS: dict[str, Callable[[list[ModelMessage], AgentInfo], ModelResponse]] = {
    DRAFT_TOOL: _drafter,
    REVISION_TOOL: _reviser,
    INSPECTOR_TOOL: _inspector,
    TRIAGE_TOOL: _triage,
    SPLIT_TOOL: _remittance,
}


async def offline_function(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Dispatch on the output tool the agent offers (async: no worker thread per request)."""
    for tool in info.output_tools:
        handler = _HANDLERS.get(tool.name)
        if handler is not None:
            return handler(messages, info)
    return _fail(messages, "this agent has no offline behaviour")


def offline_model() -> FunctionModel:
    """The deterministic offline model (``PLIXO_MODEL=offline``, the default)."""
    return FunctionModel(offline_function, model_name=OFFLINE_MODEL_NAME)
