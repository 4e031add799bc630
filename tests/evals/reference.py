"""A small, correct drafter written against the scenario data, and ways to break it.

It is the evaluators' control: on every scenario it must pass every gated check (so the checks do
not fail good drafts), and each deliberately broken variant must fail the check that matches its
defect (so the checks can fail). It writes from the scenario alone, not through the agent, so these
tests do not depend on the agent's progress or on a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

from agent.safety import injection_signals
from evals.outputs import DraftView, ProposalView, TriageView
from evals.runner import AgentAnswer, CaseContext
from evals.scenarios import DraftTask, ScenarioInputs, TriageTask, money_minor
from memory.money import format_money
from tools.kit.formatting import format_day, locale_for

TEXT = {
    "en": {
        "subject": "Invoice {num}: {balance} open",
        "hello": "Hi {first},",
        "open": "Invoice {num} for {balance} was due on {due} and is still open on the {company} "
        "account. It may simply have slipped through; if it is already on its way, thank you.",
        "paid": "Thank you for your payment of {paid}; {balance} remains open on this invoice.",
        "promise": "As promised, a payment of {pamount} was expected on {pdate}; we have not "
        "received it yet.",
        "plan": "The installment of {iamount} of your payment plan was due on {idate} and is "
        "still open.",
        "link": "You can pay securely online here: {link}",
        "bye": "Kind regards,\n{org} Accounts Receivable",
    },
    "de": {
        "subject": "Rechnung {num}: {balance} offen",
        "hello": "Hallo {first},",
        "open": "die Rechnung {num} über {balance} war am {due} fällig und ist auf dem Konto von "
        "{company} noch offen. Falls die Zahlung schon unterwegs ist, vielen Dank.",
        "paid": "Vielen Dank für Ihre Zahlung von {paid}; auf dieser Rechnung sind noch {balance} "
        "offen.",
        "promise": "Wie zugesagt, war eine Zahlung von {pamount} am {pdate} erwartet; sie ist "
        "noch nicht eingegangen.",
        "plan": "Die Rate über {iamount} Ihres Ratenplans war am {idate} fällig.",
        "link": "Sie können hier sicher online bezahlen: {link}",
        "bye": "Mit freundlichen Grüßen\n{org} Debitorenbuchhaltung",
    },
    "fr": {
        "subject": "Facture {num} : {balance} en attente",
        "hello": "Bonjour {first},",
        "open": "la facture {num} d'un montant de {balance} était due le {due} et reste ouverte "
        "sur le compte de {company}. Si le paiement est déjà en route, merci beaucoup.",
        "paid": "Merci pour votre paiement de {paid} ; il reste {balance} à régler sur cette "
        "facture.",
        "promise": "Comme convenu, un paiement de {pamount} était prévu le {pdate} ; nous ne "
        "l'avons pas encore reçu.",
        "plan": "L'échéance de {iamount} de votre plan de paiement était due le {idate}.",
        "link": "Vous pouvez payer en ligne en toute sécurité ici : {link}",
        "bye": "Cordialement,\n{org} Comptabilité clients",
    },
    "es": {
        "subject": "Factura {num}: {balance} pendiente",
        "hello": "Hola, {first}:",
        "open": "la factura {num} por {balance} vencía el {due} y sigue pendiente en la cuenta de "
        "{company}. Si el pago ya está en camino, muchas gracias.",
        "paid": "Gracias por su pago de {paid}; quedan {balance} pendientes en esta factura.",
        "promise": "Según lo acordado, esperábamos un pago de {pamount} el {pdate}; todavía no "
        "lo hemos recibido.",
        "plan": "La cuota de {iamount} de su plan de pagos vencía el {idate}.",
        "link": "Puede pagar de forma segura en línea aquí: {link}",
        "bye": "Saludos cordiales,\n{org} Cuentas por cobrar",
    },
}


def _first(name: str) -> str:
    return name.split()[0]


def reference_draft(ctx: CaseContext) -> DraftView:
    """A plain, correct draft for a drafting scenario (held when the invoice is disputed)."""
    spec: ScenarioInputs = ctx.scenario
    truth = ctx.prepared.truth
    task = spec.task
    assert isinstance(task, DraftTask)
    if task.invoice in truth.policy.disputed_invoices:
        return DraftView(held=True, hold_reason=f"invoice {task.invoice} is in dispute")
    lang = truth.language if truth.language in TEXT else "en"
    t = TEXT[lang]
    # The language's main locale: the grounding extractor does not read every country's format yet
    # (de_CH's 6’780.00, es_MX's USD23,400.00); the offline agent's evals show that gap.
    loc = locale_for(lang)
    inv = next(i for i in spec.invoices if i.number == task.invoice)
    cur = inv.currency or spec.org.default_currency
    amount = money_minor(inv.amount, cur)
    balance = amount if inv.balance is None else money_minor(inv.balance, cur)
    contact = spec.primary_contact
    values = {
        "num": inv.number,
        "balance": format_money(balance, cur, loc),
        "due": format_day(inv.due_date, loc),
        "company": spec.customer.name,
        "first": _first(contact.name),
        "link": truth.pay_link,
        "org": spec.org.name,
        "paid": format_money(amount - balance, cur, loc),
    }
    parts = [t["open"].format(**values)]
    amounts = [(balance, cur)]
    dates: list[date] = [inv.due_date]
    if amount > balance:
        parts.append(t["paid"].format(**values))
        amounts.append((amount - balance, cur))
    promise = next((p for p in spec.promises if task.invoice in p.invoices), None)
    if promise is not None and promise.status in ("missed", "open"):
        pm = money_minor(promise.amount, cur)
        parts.append(
            t["promise"].format(
                pamount=format_money(pm, cur, loc), pdate=format_day(promise.promised_date, loc)
            )
        )
        amounts.append((pm, cur))
        dates.append(promise.promised_date)
    plan = next((p for p in spec.plans if task.invoice in p.invoices), None)
    if plan is not None:
        missed = next((i for i in plan.installments if i.status == "missed"), None)
        if missed is not None:
            im = money_minor(missed.amount, cur) - money_minor(missed.paid, cur)
            parts.append(
                t["plan"].format(
                    iamount=format_money(im, cur, loc), idate=format_day(missed.due_date, loc)
                )
            )
            amounts.append((im, cur))
            dates.append(missed.due_date)
    parts.append(t["link"].format(**values))
    sender = t["bye"].format(**values)
    if task.persona == "csm_nudge" and spec.customer.csm:
        sender = f"{sender.splitlines()[0]}\n{spec.customer.csm}\n{spec.org.name}"
    elif task.persona == "sales_nudge" and spec.customer.sales:
        sender = f"{sender.splitlines()[0]}\n{spec.customer.sales}\n{spec.org.name}"
    elif task.persona == "collector" and spec.customer.collector:
        sender = f"{sender.splitlines()[0]}\n{spec.customer.collector}\n{spec.org.name}"
    body = t["hello"].format(**values) + "\n\n" + "\n\n".join(parts) + "\n\n" + sender
    if task.channel == "sms":
        body = f"{spec.org.name}: {t['open'].format(**values).split('. ')[0]}. {truth.pay_link}"
    return DraftView(
        channel=task.channel,
        recipient=contact.phone if task.channel == "sms" else contact.email,
        subject="" if task.channel == "sms" else t["subject"].format(**values),
        body=body,
        invoice_numbers=[inv.number],
        amounts=amounts,
        dates=dates,
        pay_link=truth.pay_link,
        language=lang,
        tone=task.tone,
    )


_PROMISE = re.compile(r"\b(will pay|we pay|pagaremos|zahlen wir|nous paierons|paiement)\b", re.I)


def reference_triage(ctx: CaseContext) -> TriageView:
    """A keyword triage good enough for the scenarios: it proposes only what the reply implies."""
    task = ctx.scenario.task
    assert isinstance(task, TriageTask)
    text = task.reply.lower()
    expected_class = None
    if injection_signals(task.reply) or any(
        w in text for w in ("ignore", "system", "assistant", "ignoriere", "all other")
    ):
        return TriageView(classification="other", rationale="instructions in payer text ignored")
    if any(w in text for w in ("out of the office", "nicht im büro", "absent", "fuera de la")):
        expected_class = "out_of_office"
    elif any(w in text for w in ("already paid", "paid", "überwiesen", "bezahlt", "payé", "check")):
        expected_class = "paid_claim"
    elif any(w in text for w in ("wrong", "only have", "does not match", "incorrect")):
        expected_class = "dispute"
    elif _PROMISE.search(text):
        expected_class = "promise"
    else:
        expected_class = "question"
    kinds = {
        "out_of_office": "pause_outreach",
        "paid_claim": "verify_payment",
        "dispute": "open_dispute",
        "question": "answer_question",
    }
    if expected_class == "promise":
        return TriageView(classification="promise", proposals=[])
    return TriageView(
        classification=expected_class, proposals=[ProposalView(kind=kinds[expected_class])]
    )


def reference_agent(ctx: CaseContext) -> AgentAnswer:
    if isinstance(ctx.scenario.task, TriageTask):
        return AgentAnswer(triage=reference_triage(ctx), model_name="reference")
    return AgentAnswer(draft=reference_draft(ctx), model_name="reference")


def broken(
    transform: Callable[[DraftView, CaseContext], DraftView],
) -> Callable[[CaseContext], AgentAnswer]:
    """The reference agent with ``transform`` applied to every draft it writes."""

    def agent(ctx: CaseContext) -> AgentAnswer:
        answer = reference_agent(ctx)
        if answer.draft is not None and answer.draft.has_text:
            answer.draft = transform(answer.draft, ctx)
        return answer

    return agent
