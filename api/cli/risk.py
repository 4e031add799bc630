"""The ``plixo risk`` commands: train the payment-risk model, replay a history, show the model.

``train`` learns from the organisation's paid history in the ledger and stores a new version;
``backtest`` replays a CSV history (the importer parses it) without touching the ledger, so a
model can be judged on a file before anyone relies on it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import select

from api.cli.common import console, err_console, fail, open_ledger, print_json
from memory.models import Organisation
from tools.imports.importer import ImportFileError, parse_invoice_csv
from tools.insights.account360 import org_today
from tools.insights.risk import (
    FEATURE_LABELS,
    NotEnoughHistory,
    RiskModel,
    backtest,
    current_model,
    ensure_snapshot,
    records_from_parsed,
    train,
)

risk_app = typer.Typer(
    help="Payment-risk score: train on paid history, backtest a file, show the current model.",
    no_args_is_help=True,
)

DEFAULT_FRACTION = 0.7


def _org(sessions: Any, slug: str | None) -> tuple[int, str]:
    with sessions() as session:
        orgs = session.scalars(select(Organisation).order_by(Organisation.slug)).all()
    if slug is not None:
        match = [o for o in orgs if o.slug == slug]
        if not match:
            known = ", ".join(o.slug for o in orgs) or "none yet: run `plixo demo`"
            fail(f"No organisation {slug!r} (organisations: {known}).")
        return match[0].id, match[0].slug
    if not orgs:
        fail("The ledger has no organisation yet: run `plixo demo` or import your data first.")
    if len(orgs) > 1:
        known = ", ".join(o.slug for o in orgs)
        fail(f"There are several organisations ({known}); choose one with --org SLUG.")
    return orgs[0].id, orgs[0].slug


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date: write it as YYYY-MM-DD, e.g. 2025-10-21.")


@risk_app.command("train")
def train_cmd(
    org: str | None = typer.Option(None, "--org", help="Organisation slug (if several)."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Learn from outcomes known on this day (YYYY-MM-DD); default today."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Learn the payment-risk model from the organisation's paid history; store a new version."""
    day = _day(as_of, "--as-of")
    _, sessions = open_ledger(upgrade=True)
    org_id, slug = _org(sessions, org)
    with sessions() as session:
        day = day or org_today(session, org_id)
        row = train(session, org_id, day)
        model = RiskModel.from_version(row)
        ensure_snapshot(session, org_id, day, model, force=True)
        session.commit()
        result: dict[str, Any] = {
            "org": slug,
            "version": row.version,
            "kind": row.kind,
            "trained_at": row.trained_at.isoformat(),
            "trained_through": day.isoformat(),
            "metrics": row.metrics,
            "fallback_reason": model.fallback_reason,
            "coefficients": dict(zip(row.features, model.coef, strict=False)),
        }
    if as_json:
        print_json(result)
        return
    console.print(
        f"Risk model [bold]v{result['version']}[/] for {slug}: {model.label} "
        f"(outcomes known on {day.isoformat()})."
    )
    metrics = result["metrics"]
    console.print(
        f"{metrics.get('examples', 0)} paid invoices with a known outcome, "
        f"{metrics.get('late', 0)} late."
    )
    if model.kind == "fallback":
        console.print(f"[yellow]Fallback:[/] {model.fallback_reason}")
    else:
        console.print(
            f"Holdout (latest 20%): AUC {metrics.get('holdout_auc')}, "
            f"Brier {metrics.get('holdout_brier')}."
        )


@risk_app.command("show")
def show_cmd(
    org: str | None = typer.Option(None, "--org", help="Organisation slug (if several)."),
    as_json: bool = typer.Option(False, "--json", help="Print the model as JSON."),
) -> None:
    """Show the model the scores come from (or the fallback, and why)."""
    _, sessions = open_ledger(upgrade=True)
    org_id, slug = _org(sessions, org)
    with sessions() as session:
        model = current_model(session, org_id)
    data = {
        "org": slug,
        "label": model.label,
        "kind": model.kind,
        "version": model.version,
        "trained_at": model.trained_at.isoformat() if model.trained_at else None,
        "fallback_reason": model.fallback_reason,
        "metrics": model.metrics,
        "coefficients": dict(zip(model.features, model.coef, strict=False)),
    }
    if as_json:
        print_json(data)
        return
    console.print(f"{slug}: {model.label}")
    if model.fallback_reason:
        console.print(model.fallback_reason)
    if model.coef:
        table = Table("feature", "meaning", "coefficient (standardized)")
        for name, coef in zip(model.features, model.coef, strict=True):
            table.add_row(name, FEATURE_LABELS[name], f"{coef:+.3f}")
        console.print(table)


@risk_app.command("backtest")
def backtest_cmd(
    file: Path = typer.Argument(
        ..., help="An invoice history CSV (any profile the importer knows)."
    ),
    fraction: list[float] = typer.Option(
        [DEFAULT_FRACTION],
        "--fraction",
        help="Train on this first share of invoices by invoice date (repeat for several cuts).",
    ),
    profile: str | None = typer.Option(None, "--profile", help="Column mapping to use."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Replay a history: train on the invoices before the cut, score the rest, report AUC,
    Brier score and a calibration table. Nothing is written to the ledger."""
    for f in fraction:
        if not 0.0 < f < 1.0:
            fail(f"--fraction {f} is outside (0, 1): e.g. 0.7 trains on the first 70%.")
    try:
        parsed = parse_invoice_csv(file, profile)
    except ImportFileError as exc:
        fail(str(exc))
    if parsed.errors:
        first = "; ".join(f"row {e.row} {e.column}: {e.reason}" for e in parsed.errors[:5])
        fail(
            f"{len(parsed.rejected_rows)} rows of {file} are invalid ({first}). Fix them first; "
            "`plixo import invoices` reports every bad row."
        )
    records = records_from_parsed(parsed.rows)
    results = []
    for f in fraction:
        try:
            results.append(backtest(records, f).to_dict())
        except NotEnoughHistory as exc:
            fail(str(exc))
    if as_json:
        print_json(results[0] if len(results) == 1 else {"file": str(file), "cuts": results})
        return
    for r in results:
        _print_backtest(file, r)


def _print_backtest(file: Path, r: dict[str, Any]) -> None:
    console.print(
        f"[bold]{file.name}[/]: trained on {r['n_train']} invoices issued before "
        f"{r['cut_date']} (first {r['fraction']:.0%}), scored {r['n_test']} after "
        f"({r['test_late_rate']:.1%} paid late). Model: {r['model_kind']}."
    )
    console.print(
        f"AUC [bold]{r['auc']}[/]   Brier {r['brier']}   "
        f"(earlier late rate alone: AUC {r['baseline_auc_earlier_late_rate']}; "
        f"without the invoice's dispute flag: AUC {r['auc_without_invoice_dispute_flag']})"
    )
    table = Table("predicted", "invoices", "mean predicted", "observed late rate")
    for row in r["calibration"]:
        table.add_row(
            row["bin"],
            str(row["count"]),
            "" if row["mean_predicted"] is None else f"{row['mean_predicted']:.3f}",
            "" if row["observed_late_rate"] is None else f"{row['observed_late_rate']:.3f}",
        )
    console.print(table)
    err_console.print(
        "The file's dispute flags are undated: an invoice's own dispute counts as known when it "
        "is scored (the ledger dates its disputes)."
    )


@risk_app.command("refresh")
def refresh_cmd(
    org: str | None = typer.Option(None, "--org", help="Organisation slug (if several)."),
) -> None:
    """Rebuild the customer risk snapshot Today's Focus ranks against (run daily, e.g. cron)."""
    _, sessions = open_ledger(upgrade=True)
    org_id, slug = _org(sessions, org)
    with sessions() as session:
        day = org_today(session, org_id)
        state = ensure_snapshot(session, org_id, day, current_model(session, org_id), force=True)
        session.commit()
    console.print(f"Risk history for {slug} refreshed as of {state.as_of.isoformat()}.")
