"""``plixo demo``: build the demo organisation, run one Autopilot pass in Shadow Mode, summarise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.cli.common import console, err_console, fail, open_ledger, print_json
from memory import clock
from memory.config import get_settings
from memory.models import (
    AgingBucket,
    Customer,
    Dispute,
    DisputeStatus,
    Draft,
    DraftStatus,
    Invoice,
    InvoiceStatus,
    PaymentPlan,
    PlanStatus,
    PromiseToPay,
)
from memory.money import format_money
from memory.recall import index_ledger, open_recall
from tools.demo.builder import (
    DEMO_DOMAIN,
    DEMO_PASSWORD,
    DEMO_SLUG,
    DEMO_TIMEZONE,
    USERS,
    build_demo,
)
from tools.insights import risk
from tools.insights.readiness import data_ready
from tools.kit import labels
from tools.ledger.orgs import delete_org, get_org


def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    seed: int = typer.Option(7, help="Seed of the demo generator (same seed, same ledger)."),
    today: str | None = typer.Option(None, help="Pretend today is YYYY-MM-DD (default: today)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete and rebuild the demo organisation."),
) -> None:
    """Build the demo organisation and run one Autopilot pass in Shadow Mode."""
    try:
        given = date.fromisoformat(today) if today else None
    except ValueError:
        fail(f"--today {today!r} is not a date; write it as YYYY-MM-DD")
    settings = get_settings()
    _, sessions = open_ledger()
    with sessions() as session:
        org = get_org(session, DEMO_SLUG)
        # One business date for the build, the Autopilot pass and the panel: the organisation's.
        as_of = given or clock.business_date(org.timezone if org else DEMO_TIMEZONE)
        if org is not None and fresh:
            delete_org(session, org.id)
            session.commit()
            org = None
        built = org is None
        if org is None:
            org = build_demo(session, seed=seed, today=as_of).org
            session.commit()
            # Learn the payment-risk score from the demo's paid history, as `plixo risk train` does.
            risk.train(session, org.id, as_of)
            session.commit()
        org_id = org.id

    # lazy: the Autopilot brings DBOS (~140 modules); only `plixo demo` loads it (CLI start-up)
    from agent.autopilot import run_autopilot

    with Progress(
        TextColumn("Autopilot (Shadow Mode)"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("drafting", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        run = run_autopilot(
            sessions, org_id, as_of=as_of, shadow=True, settings=settings, progress=progress
        )
    with sessions() as session:
        # Notes, replies and outreach become searchable for the inspector and the reviser.
        index_ledger(session, org_id, open_recall(settings))
        summary = summarise(session, org_id, as_of)
    summary["built"] = built
    summary["autopilot"] = run.model_dump(mode="json")
    if as_json:
        print_json(summary)
    else:
        _print(summary)


def summarise(session: Session, org_id: int, as_of: date) -> dict[str, Any]:
    """Ledger figures for the demo summary, straight from the database."""
    open_inv = session.scalars(
        select(Invoice).where(Invoice.org_id == org_id, Invoice.status == InvoiceStatus.OPEN)
    ).all()
    buckets: dict[str, dict[str, Any]] = {b.value: {"count": 0, "balance": {}} for b in AgingBucket}
    for inv in open_inv:
        b = buckets[inv.aging_bucket(as_of).value]
        b["count"] += 1
        b["balance"][inv.currency] = b["balance"].get(inv.currency, 0) + inv.balance_minor

    def by_status(model: Any) -> dict[str, int]:
        rows = session.execute(
            select(model.status, func.count()).where(model.org_id == org_id).group_by(model.status)
        ).all()
        return {str(s.value): n for s, n in rows}

    drafts = session.scalars(select(Draft).where(Draft.org_id == org_id)).all()
    queues: Counter[str] = Counter()
    for d in drafts:
        if d.status is DraftStatus.PENDING_REVIEW:
            queues[str(d.decision.get("approver_role") or "Collector")] += 1
        elif d.status is DraftStatus.HELD:
            queues["Collector"] += 1
    plans_waiting = session.scalars(
        select(PaymentPlan).where(
            PaymentPlan.org_id == org_id, PaymentPlan.status == PlanStatus.PENDING_APPROVAL
        )
    ).all()
    for plan in plans_waiting:
        queues[str((plan.decision or {}).get("approver_role") or "Controller")] += 1
    queues["Legal"] += (
        session.scalar(
            select(func.count()).where(
                Dispute.org_id == org_id, Dispute.status == DisputeStatus.ESCALATED_LEGAL
            )
        )
        or 0
    )
    readiness = data_ready(session, org_id, clock.now())
    return {
        "organisation": DEMO_SLUG,
        "as_of": as_of.isoformat(),
        "model": get_settings().model,
        "data_ready": readiness.to_dict(),
        "customers": session.scalar(select(func.count()).where(Customer.org_id == org_id)),
        "invoices": {
            "total": session.scalar(select(func.count()).where(Invoice.org_id == org_id)),
            "open": len(open_inv),
            "aging": buckets,
        },
        "promises": by_status(PromiseToPay),
        "plans": by_status(PaymentPlan),
        "disputes": by_status(Dispute),
        "drafts": by_status(Draft),
        "queues": dict(sorted(queues.items())),
        "logins": {
            "password": DEMO_PASSWORD,
            # the first user of each persona (the demo has two Collectors)
            "users": {
                role.value: f"{login}@{DEMO_DOMAIN}" for login, _, role, _ in reversed(USERS)
            },
        },
    }


def _money(balances: dict[str, int]) -> str:
    return ", ".join(format_money(v, c) for c, v in sorted(balances.items())) or "-"


def _print(s: dict[str, Any]) -> None:
    ap = s["autopilot"]
    console.rule(f"[bold]plixo demo[/] · {s['organisation']} · as of {s['as_of']}")
    console.print(
        f"Model: [bold]{ap.get('model_name', s['model'])}[/]"
        + (" (offline, deterministic: no network, no API key)" if s["model"] == "offline" else "")
    )
    console.print(
        f"{'Built' if s['built'] else 'Re-used'} the demo organisation: "
        f"{s['customers']} customers, "
        f"{s['invoices']['total']} invoices ({s['invoices']['open']} open). "
        f"Data-Ready {s['data_ready']['score']}/100."
    )
    aging = Table("Aging bucket", "Open invoices", "Balance", title="Open receivables")
    for name, b in s["invoices"]["aging"].items():
        aging.add_row(name, str(b["count"]), _money(b["balance"]))
    console.print(aging)
    commits = Table("", "By status", title="Commitments")
    words: dict[str, Callable[[object], str]] = {
        "promises": labels.promise_label,
        "plans": labels.plan_label,
        "disputes": labels.label,
    }
    for kind, word in words.items():
        counts = ", ".join(f"{word(k).lower()} {v}" for k, v in s[kind].items())
        commits.add_row(labels.humanize(kind), counts)
    console.print(commits)

    outcome = Table(
        "Decision", "Drafts", title="Autopilot pass in Shadow Mode: what the guardrails decided"
    )
    for k, v in ap.get("by_outcome", {}).items():
        outcome.add_row(labels.label(k), str(v))
    console.print(
        f"Drafted {ap.get('drafted', 0)} new drafts for {ap.get('due', 0)} due cadence steps "
        f"({ap.get('skipped_existing', 0)} already drafted earlier, "
        f"{ap.get('held', 0)} held for a human, "
        f"{ap.get('grounding_mismatches', 0)} grounding mismatches)."
    )
    if ap.get("excluded"):
        console.print(
            "Not chased: "
            + ", ".join(f"{n} {labels.label(k).lower()}" for k, n in sorted(ap["excluded"].items()))
            + " (left out of this pass by the cadence and the guardrails)."
        )
    console.print(outcome)
    reasons = Table("Rule", "Fired", title="Reasons")
    for k, v in sorted(ap.get("by_reason", {}).items(), key=lambda kv: -kv[1]):
        reasons.add_row(labels.rule_label(k), str(v))
    console.print(reasons)
    queues = Table("Persona", "Waiting for them", title="Queues")
    for k, v in s["queues"].items():
        queues.add_row(k, str(v))
    console.print(queues)
    console.print(
        "Nothing was sent: Shadow Mode holds every draft for review. Open the review panel with "
        "[bold]plixo serve[/] and log in as "
        f"[bold]{s['logins']['users']['Collector']}[/] / [bold]{s['logins']['password']}[/]."
    )
