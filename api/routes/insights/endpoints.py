"""Today's Focus, Account 360, Renewal Risk and the CFO console: JSON endpoints and pages.

Every route names its permission from the access matrix and scopes every query to the caller's
organisation. Charts are server-rendered SVG (no script, nothing fetched from the internet), and
every table on the console has a CSV export.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Clock, DbSession, require
from api.pages import render_page as _render
from memory import clock
from memory.models import (
    AgingBucket,
    Cadence,
    Customer,
    Organisation,
    Persona,
    Segment,
    User,
)
from policies.money import exponent, format_money
from tools.drafts import costs as draft_costs
from tools.insights import metrics
from tools.insights.account360 import account_360
from tools.insights.account360 import org_today as today_for
from tools.insights.focus import FocusList, todays_focus
from tools.insights.renewal import RenewalReport, renewal_risk
from tools.insights.risk import current_model, score_customer_invoices
from tools.kit.csvsafe import safe_writer
from tools.kit.labels import locale_from_header, month_short
from tools.kit.labels import period as period_words
from tools.outreach import nudges
from tools.replies import conversations

router = APIRouter(tags=["insights"])

FocusViewer = Annotated[User, Depends(require("view_queue"))]
AccountViewer = Annotated[User, Depends(require("view_account"))]
ConsoleViewer = Annotated[User, Depends(require("view_console"))]
Exporter = Annotated[User, Depends(require("export"))]
CustomerId = Annotated[int, Path(ge=1, le=2**31 - 1)]
CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")
CONSOLE_TABLES = ("cash_collected", "dso", "aging", "promise_adherence", "exposure")


# --- shared helpers ---------------------------------------------------------------------------


def org_today(db: Session, org_id: int, now: datetime | None = None) -> date:
    """Today in the organisation's time zone (the tool owner's helper when present)."""

    return today_for(db, org_id, now)


def _currency(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not CURRENCY_RE.match(value):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"currency {value!r} is not an ISO code: send three letters, e.g. USD.",
        )
    return value.upper()


EARLIEST, LATEST = date(1900, 1, 1), date(2999, 12, 31)


def _in_range(day: date, name: str) -> date:
    """Dates far outside any ledger would only overflow the calendar arithmetic: refuse them."""
    if not EARLIEST <= day <= LATEST:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{name} {day.isoformat()} is out of range: use a date from 1900 to 2999.",
        )
    return day


def _month(value: str | None, fallback: date) -> date:
    """The last day covered by a ``YYYY-MM`` (or ``YYYY-MM-DD``) query value."""
    if not value:
        return fallback
    try:
        if len(value) == 7:
            year, month = (int(p) for p in value.split("-"))
            return _in_range(metrics.Period.month(year, month).end, "end")
        return _in_range(date.fromisoformat(value), "end")
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{value!r} is not a month or a date: send YYYY-MM or YYYY-MM-DD, e.g. 2013-06.",
        ) from None


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{name} {value!r} is not a date: send YYYY-MM-DD, e.g. 2013-06-30.",
        ) from None
    return _in_range(day, name)


def _check_user(db: Session, org_id: int, user_id: int | None) -> None:
    if user_id is None:
        return
    owner = db.get(User, user_id)
    if owner is None or owner.org_id != org_id:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"user {user_id} is not in your organisation"
        )


def _check_segment(db: Session, org_id: int, segment_id: int | None) -> None:
    if segment_id is None:
        return
    segment = db.get(Segment, segment_id)
    if segment is None or segment.org_id != org_id:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"segment {segment_id} is not in your organisation"
        )


def _customer(db: Session, org_id: int, customer_id: int) -> Customer:
    customer = db.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"customer {customer_id} does not exist in your organisation"
        )
    return customer


def _csv(filename: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Response:
    buf = io.StringIO()
    writer = safe_writer(buf)  # no cell starts a formula in a spreadsheet
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _money_text(amount_minor: int, currency: str) -> str:
    """An amount in a page's table: money as money ("$1,234.56"), never a bare decimal."""
    return str(format_money(amount_minor, currency))


def _major(amount_minor: int, currency: str) -> str:
    """Minor units as a plain decimal for CSV (no symbols, no thousands separators)."""

    exp = exponent(currency)
    if exp == 0:
        return str(amount_minor)
    sign = "-" if amount_minor < 0 else ""
    units, frac = divmod(abs(amount_minor), 10**exp)
    return f"{sign}{units}.{str(frac).rjust(exp, '0')}"


# --- SVG charts -------------------------------------------------------------------------------

PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9")
BUCKET_COLOURS = {
    AgingBucket.CURRENT: "#10b981",
    AgingBucket.D1_30: "#fbbf24",
    AgingBucket.D31_60: "#f59e0b",
    AgingBucket.D61_90: "#ef4444",
    AgingBucket.D90_PLUS: "#991b1b",
}


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 × a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>"
    )


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    fmt: Any,
    colour: str = "",
    *,
    fixed_max: float | None = None,
) -> Markup:
    """Vertical bars with a value on each; a missing value is drawn as an empty slot, labelled."""
    width, height, left, bottom, top = 640, 240, 64, 34, 18
    plot_w, plot_h = width - left - 12, height - top - bottom
    vmax = fixed_max or _nice_max(max((v for v in values if v is not None), default=0.0))
    n = max(len(labels), 1)
    slot = plot_w / n
    parts = [_svg_open(width, height, title)]
    for i in range(5):
        y = top + plot_h * i / 4
        tick = vmax * (4 - i) / 4
        parts.append(
            f'<line x1="{left}" x2="{width - 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">'
            f"{escape(fmt(tick))}</text>"
        )
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = left + i * slot
        cx = x + slot / 2
        if value is None:
            parts.append(
                f'<text x="{cx:.1f}" y="{top + plot_h - 4:.1f}" text-anchor="middle" '
                f'fill="#9ca3af" font-size="9">n/a</text>'
            )
        else:
            h = plot_h * max(value, 0) / vmax
            parts.append(
                f'<rect class="bar" x="{x + slot * 0.15:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{slot * 0.7:.1f}" height="{h:.1f}" rx="2" fill="{colour or PALETTE[0]}">'
                f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
            )
            if n <= 14:
                parts.append(
                    f'<text x="{cx:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle" '
                    f'fill="#374151" font-size="9">{escape(fmt(value))}</text>'
                )
        parts.append(
            f'<text x="{cx:.1f}" y="{height - bottom + 16:.1f}" text-anchor="middle" '
            f'fill="#6b7280">{escape(label)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - 12}" y1="{top + plot_h}" y2="{top + plot_h}" '
        f'stroke="#9ca3af"/></svg>'
    )
    return Markup("".join(parts))


def line_chart(
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    fmt: Any,
    *,
    fixed_max: float | None = None,
) -> Markup:
    """Lines with dots; a gap where a value is missing (not enough data), and a legend."""
    width, height, left, bottom, top = 640, 250, 56, 50, 18
    plot_w, plot_h = width - left - 36, height - top - bottom
    found = [v for vals in series.values() for v in vals if v is not None]
    vmax = fixed_max if fixed_max is not None else _nice_max(max(found, default=0.0))
    n = max(len(labels), 1)
    step = plot_w / max(n - 1, 1)
    parts = [_svg_open(width, height, title)]
    for i in range(5):
        y = top + plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - 16}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">'
            f"{escape(fmt(vmax * (4 - i) / 4))}</text>"
        )
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{left + i * step:.1f}" y="{top + plot_h + 16:.1f}" text-anchor="middle" '
            f'fill="#6b7280">{escape(label)}</text>'
        )
    for k, (name, vals) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[tuple[float, float, float]]] = [[]]
        for i, v in enumerate(vals):
            if v is None:
                runs.append([])
                continue
            y = top + plot_h - plot_h * min(max(v, 0.0), vmax) / vmax
            runs[-1].append((left + i * step, y, v))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in run)
                parts.append(
                    f'<polyline class="series" points="{points}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"/>'
                )
            for x, y, v in run:
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)}: {escape(fmt(v))}</title></circle>"
                )
        lx = left + k * 170
        parts.append(
            f'<rect x="{lx}" y="{height - 18}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{height - 13}" fill="#374151">{escape(name)}</text>'
        )
    if not found:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
            f'fill="#9ca3af" font-size="13">not enough data</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def aging_chart(title: str, row: metrics.AgingRow) -> Markup:
    """One horizontal stacked bar of outstanding by aging bucket, with a legend of amounts."""
    width, height = 640, 96
    total = row.total
    parts = [_svg_open(width, height, title)]
    x = 8.0
    span = width - 16
    for bucket in metrics.BUCKETS:
        amount = row.amounts[bucket]
        w = span * amount / total if total else 0
        if w > 0:
            parts.append(
                f'<rect class="segment" x="{x:.1f}" y="8" width="{w:.1f}" height="34" '
                f'fill="{BUCKET_COLOURS[bucket]}"><title>{escape(bucket.value)}: '
                f"{escape(format_money(amount, row.currency))}</title></rect>"
            )
        x += w
    for i, bucket in enumerate(metrics.BUCKETS):
        lx = 8 + i * 126
        share = row.amounts[bucket] / total if total else 0
        parts.append(
            f'<rect x="{lx}" y="56" width="10" height="10" fill="{BUCKET_COLOURS[bucket]}"/>'
            f'<text x="{lx + 14}" y="65" fill="#374151">{escape(bucket.value)} · {share:.0%}</text>'
            f'<text x="{lx + 14}" y="82" fill="#6b7280">'
            f"{escape(format_money(row.amounts[bucket], row.currency))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _money_fmt(currency: str) -> Any:
    """Compact money for axes and bar labels: whole units, thousands as k, millions as M."""

    scale = 10 ** exponent(currency)
    zero = format_money(0, currency)  # "$0" or "0 CHF": where the symbol goes

    def wrap(number: str) -> str:
        return zero[:-1] + number if zero.endswith("0") else number + zero[1:]

    def fmt(value: float) -> str:
        units = value / scale
        if abs(units) >= 1_000_000:
            return wrap(f"{units / 1_000_000:.1f}M")
        if abs(units) >= 10_000:
            k = units / 1_000
            return wrap(f"{k:.0f}k" if k == round(k) or abs(k) >= 100 else f"{k:.1f}k")
        if abs(units) >= 1_000:
            return wrap(f"{units / 1_000:.1f}k")
        return wrap(f"{units:.0f}")

    return fmt


def _days_fmt(value: float) -> str:
    return f"{value:.0f} d"


def _pct_fmt(value: float) -> str:
    return f"{value:.0f}%"


# --- Today's Focus ----------------------------------------------------------------------------


def _focus(
    db: Session, user: User, limit: int, currency: str | None, as_of: date | None
) -> FocusList:
    result = todays_focus(
        db,
        user,
        as_of=as_of or org_today(db, user.org_id),
        limit=limit,
        currency=_currency(currency),
    )
    db.commit()  # a refreshed risk snapshot is kept for the next request
    return result


@router.get("/api/focus", response_model=dict[str, Any])
def focus_api(
    user: FocusViewer,
    db: DbSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    as_of: Annotated[str | None, Query(max_length=10)] = None,
) -> dict[str, Any]:
    """Today's Focus for the caller: open invoices ranked by expected cash at risk × urgency."""
    return _focus(db, user, limit, currency, _day(as_of, "as_of")).to_dict()


@router.get("/focus", response_class=HTMLResponse, include_in_schema=False)
def focus_page(
    request: Request,
    user: FocusViewer,
    db: DbSession,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> HTMLResponse:
    focus = _focus(db, user, limit, currency, None)
    return _render(request, "focus.html", user, focus=focus)


@router.get("/focus.csv", include_in_schema=False)
def focus_csv(
    user: Exporter,
    db: DbSession,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
) -> Response:
    focus = _focus(db, user, limit, currency, None)
    rows = [
        [
            i.rank,
            i.customer_name,
            i.invoice_number,
            i.currency,
            _major(i.balance_minor, i.currency),
            i.due_date.isoformat(),
            i.days_past_due,
            f"{i.risk:.4f}",
            _major(i.at_risk_minor, i.currency),
            i.urgency,
            f"{i.priority:.2f}",
            "; ".join(i.badges),
            "; ".join(r.text for r in i.reasons),
        ]
        for i in focus.items
    ]
    header = [
        "rank",
        "customer",
        "invoice",
        "currency",
        "balance",
        "due_date",
        "days_past_due",
        "risk",
        "expected_cash_at_risk",
        "urgency",
        "priority",
        "badges",
        "reasons",
    ]
    return _csv(f"todays-focus-{focus.as_of.isoformat()}.csv", header, rows)


# --- Account 360 ------------------------------------------------------------------------------


def _account_risk(
    db: Session, org_id: int, customer_id: int, as_of: date
) -> tuple[dict[int, Any], Any]:
    model = current_model(db, org_id)
    return score_customer_invoices(db, org_id, customer_id, as_of, model), model


@router.get("/api/accounts/{customer_id}/risk", response_model=dict[str, Any])
def account_risk_api(customer_id: CustomerId, user: AccountViewer, db: DbSession) -> dict[str, Any]:
    """Payment-risk score of each open invoice of the account, with its top reasons."""
    _customer(db, user.org_id, customer_id)
    as_of = org_today(db, user.org_id)
    risks, model = _account_risk(db, user.org_id, customer_id, as_of)
    return {
        "customer_id": customer_id,
        "as_of": as_of.isoformat(),
        "model": {
            "kind": model.kind,
            "label": model.label,
            "version": model.version,
            "fallback_reason": model.fallback_reason,
        },
        "invoices": [
            {
                "invoice_id": r.invoice_id,
                "risk": round(r.probability, 4),
                "reasons": [
                    {"feature": x.feature, "text": x.text, "direction": x.direction}
                    for x in r.reasons
                ],
            }
            for r in risks.values()
        ],
    }


@router.get("/accounts/{customer_id}", response_class=HTMLResponse, include_in_schema=False)
def account_page(
    request: Request, customer_id: CustomerId, user: AccountViewer, db: DbSession, clock: Clock
) -> HTMLResponse:

    customer = _customer(db, user.org_id, customer_id)
    as_of = org_today(db, user.org_id, clock())  # the app's clock, as on every other page
    view = account_360(db, user.org_id, customer_id, as_of=as_of)
    risks, model = _account_risk(db, user.org_id, customer_id, as_of)
    segment = db.get(Segment, customer.segment_id) if customer.segment_id else None
    cadence = db.get(Cadence, segment.cadence_id) if segment and segment.cadence_id else None
    templates_for_user = [
        t
        for t in nudges.TEMPLATES.values()
        if user.role.value in t.personas
        or user.role in (Persona.ADMIN, Persona.CONTROLLER, Persona.COLLECTIONS_MANAGER)
    ]
    bucket_rows: dict[str, metrics.AgingRow] = {}
    for b in view.balances_by_bucket:
        row = bucket_rows.setdefault(
            b.currency,
            metrics.AgingRow(
                b.currency, dict.fromkeys(metrics.BUCKETS, 0), dict.fromkeys(metrics.BUCKETS, 0)
            ),
        )
        row.amounts[b.bucket] += b.balance_minor
        row.counts[b.bucket] += b.invoices
    charts = [aging_chart(f"Open balance by aging bucket ({c})", r) for c, r in bucket_rows.items()]
    return _render(
        request,
        "account360.html",
        user,
        view=view,
        risks=risks,
        model=model,
        segment=segment,
        cadence=cadence,
        nudge_templates=templates_for_user,
        aging_charts=charts,
        as_of=as_of,
        conversation=conversations.conversation(db, user.org_id, customer_id=customer_id),
    )


# --- Renewal Risk -----------------------------------------------------------------------------

OwnerRoleQ = Literal["csm", "sales", "collector", "any"]


def _renewal(
    db: Session,
    user: User,
    window: int,
    segment_id: int | None,
    owner_id: int | None,
    owner_role: OwnerRoleQ,
) -> RenewalReport:
    _check_segment(db, user.org_id, segment_id)
    _check_user(db, user.org_id, owner_id)
    return renewal_risk(
        db,
        user.org_id,
        as_of=org_today(db, user.org_id),
        window_days=window,
        segment_id=segment_id,
        owner_user_id=owner_id,
        owner_role=owner_role,
    )


@router.get("/api/renewal-risk", response_model=dict[str, Any])
def renewal_api(
    user: AccountViewer,
    db: DbSession,
    window: Annotated[int, Query(ge=0, le=730)] = 90,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_role: OwnerRoleQ = "csm",
) -> dict[str, Any]:
    """Accounts renewing inside the window, ranked by past-due balance, broken promises and
    dispute frequency."""
    return _renewal(db, user, window, segment_id, owner_id, owner_role).to_dict()


def _owners(db: Session, org_id: int) -> list[User]:
    return list(
        db.scalars(
            select(User)
            .where(
                User.org_id == org_id,
                User.active.is_(True),
                User.role.in_((Persona.CSM, Persona.SALES, Persona.COLLECTOR)),
            )
            .order_by(User.name)
        )
    )


def _segments(db: Session, org_id: int) -> list[Segment]:
    return list(db.scalars(select(Segment).where(Segment.org_id == org_id).order_by(Segment.name)))


@router.get("/renewal-risk", response_class=HTMLResponse, include_in_schema=False)
def renewal_page(
    request: Request,
    user: AccountViewer,
    db: DbSession,
    window: Annotated[int, Query(ge=0, le=730)] = 90,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[str | None, Query(max_length=12)] = None,
) -> HTMLResponse:
    # A CSM starts from their own accounts; "all" shows everyone's.
    owner: int | None
    if owner_id in (None, ""):
        owner = user.id if user.role == Persona.CSM else None
    elif owner_id == "all":
        owner = None
    elif owner_id.isdigit():
        owner = int(owner_id)
    else:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "owner_id must be a user id or 'all'."
        )
    report = _renewal(db, user, window, segment_id, owner, "any" if owner else "csm")
    return _render(
        request,
        "renewal.html",
        user,
        report=report,
        window=window,
        segment_id=segment_id,
        owner=owner,
        owners=_owners(db, user.org_id),
        segments=_segments(db, user.org_id),
        windows=(30, 60, 90, 180, 365),
    )


@router.get("/renewal-risk.csv", include_in_schema=False)
def renewal_csv(
    user: Exporter,
    db: DbSession,
    window: Annotated[int, Query(ge=0, le=730)] = 90,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    report = _renewal(db, user, window, segment_id, owner_id, "any")
    rows = []
    for r in report.rows:
        currencies = sorted(set(r.open_minor) | set(r.past_due_minor)) or [""]
        for cur in currencies:
            rows.append(
                [
                    r.customer_name,
                    r.segment or "",
                    r.csm or "",
                    r.renewal_date.isoformat(),
                    r.days_to_renewal,
                    cur,
                    _major(r.open_minor.get(cur, 0), cur) if cur else "",
                    _major(r.past_due_minor.get(cur, 0), cur) if cur else "",
                    r.broken_promises,
                    r.disputes,
                    r.invoices,
                    "" if r.dispute_frequency is None else f"{r.dispute_frequency:.4f}",
                    f"{r.score:.3f}",
                    r.level,
                ]
            )
    header = [
        "customer",
        "segment",
        "csm",
        "renewal_date",
        "days_to_renewal",
        "currency",
        "open_balance",
        "past_due_balance",
        "broken_promises",
        "disputes",
        "invoices",
        "dispute_frequency",
        "score",
        "level",
    ]
    return _csv(f"renewal-risk-{report.as_of.isoformat()}.csv", header, rows)


# --- CFO console ------------------------------------------------------------------------------


def _scope(
    db: Session,
    user: User,
    segment_id: int | None,
    owner_id: int | None,
    currency: str | None,
) -> metrics.Scope:
    _check_segment(db, user.org_id, segment_id)
    _check_user(db, user.org_id, owner_id)
    return metrics.Scope(
        org_id=user.org_id,
        segment_id=segment_id,
        owner_user_id=owner_id,
        currency=_currency(currency),
    )


def _console_end(db: Session, org_id: int, end: str | None) -> tuple[date, str | None]:
    """The last day the console covers, and a note when it is not today."""
    today = org_today(db, org_id)
    if end:
        return _month(end, today), None
    last = metrics.latest_activity_date(db, org_id)
    if last is not None and (today - last).days > 365:
        return last, (
            f"Nothing happened in the ledger in the last year; showing the 12 months to "
            f"{last.isoformat()}, the last activity."
        )
    return today, None


@router.get("/api/metrics", response_model=dict[str, Any])
def metrics_api(
    user: ConsoleViewer,
    db: DbSession,
    start: Annotated[str | None, Query(max_length=10, description="First day, YYYY-MM-DD")] = None,
    end: Annotated[str | None, Query(max_length=10, description="Last day, YYYY-MM-DD")] = None,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
) -> dict[str, Any]:
    """Every receivables metric for one period (defined in the README, Metrics and scores).

    Without ``start`` and ``end``: the last complete month, with the month to date beside it
    (``period_to_date``). ``period`` says which window is shown; DSO (simple) and average days
    delinquent also name the sales window they average over (``window``)."""
    first, last = _day(start, "start"), _day(end, "end")
    if (first is None) != (last is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "send both start and end as YYYY-MM-DD (e.g. start=2013-06-01&end=2013-06-30), "
            "or neither for the last complete month.",
        )
    today = org_today(db, user.org_id)
    try:
        period = metrics.Period(first, last) if first and last else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    scope = _scope(db, user, segment_id, owner_id, currency)
    if period is not None:
        return _metrics_for(db, scope, period, today, "requested")
    out = _metrics_for(db, scope, metrics.last_complete_month(today), today, "last complete month")
    out["period_to_date"] = _metrics_for(
        db, scope, metrics.month_to_date(today), today, "month to date"
    )
    return out


def _metrics_for(
    db: Session, scope: metrics.Scope, period: metrics.Period, today: date, kind: str
) -> dict[str, Any]:
    aging = metrics.aging(db, scope, period.end)
    cash = metrics.cash_collected(db, scope, period)
    exposure = metrics.exposure(db, scope, period.end)
    adherence = metrics.promise_adherence(db, scope, period, as_of=today)
    return {
        "period": period.to_dict() | {"kind": kind},
        "scope": {
            "segment_id": scope.segment_id,
            "owner_id": scope.owner_user_id,
            "currency": scope.currency,
        },
        "aging": {
            cur: {
                "buckets": {b.value: row.amounts[b] for b in metrics.BUCKETS},
                "counts": {b.value: row.counts[b] for b in metrics.BUCKETS},
                "total": row.total,
            }
            for cur, row in aging.items()
        },
        "cash_collected": {"amounts": cash.amounts, "reason": cash.reason},
        "dso_countback": metrics.dso_countback(db, scope, period.end).to_dict(),
        "dso_simple": metrics.dso_simple(db, scope, period).to_dict(),
        "cei": metrics.cei(db, scope, period).to_dict(),
        "average_days_delinquent": metrics.average_days_delinquent(db, scope, period).to_dict(),
        "promise_adherence": adherence.to_dict(),
        "exposure": exposure.rows(),
    }


def _console_data(
    db: Session,
    user: User,
    end: str | None,
    months: int,
    segment_id: int | None,
    owner_id: int | None,
    currency: str | None,
) -> dict[str, Any]:
    scope = _scope(db, user, segment_id, owner_id, currency)
    last, note = _console_end(db, user.org_id, end)
    found = metrics.currencies(db, scope)
    if scope.currency is None and len(found) > 1:
        # Ratios cannot mix currencies: start from the organisation's own, say so, offer the rest.
        org = db.get(Organisation, user.org_id)
        chosen = org.default_currency if org and org.default_currency in found else found[0]
        scope = dataclasses.replace(scope, currency=chosen)
        mixed = f"Amounts are in {', '.join(found)}; showing {chosen} (choose another above)."
        note = f"{note} {mixed}" if note else mixed
    series = metrics.monthly_series(db, scope, last, months, as_of=org_today(db, user.org_id))
    aging = metrics.aging(db, scope, last)
    exposure = metrics.exposure(db, scope, last)
    return {
        "scope": scope,
        "end": last,
        "note": note,
        "series": series,
        "aging": aging,
        "exposure": exposure,
        "currencies": [scope.currency] if scope.currency else found,
        "all_currencies": found,
        "drafting_cost": draft_costs.cost_per_100_drafts(db, user.org_id),
    }


def _figure_value(f: metrics.Figure) -> str:
    """A figure with two decimals, or blank when it cannot be computed."""
    return "" if f.value is None else f"{f.value:.2f}"


def _dso_rows(series: list[metrics.MonthPoint], mon: Any) -> list[list[Any]]:
    """Per month: DSO (countback and simple), CEI, average days delinquent, and why a figure is
    missing."""
    return [
        [
            mon(p.period.start),
            p.dso_countback.currency or p.dso_simple.currency or "",
            _figure_value(p.dso_countback),
            _figure_value(p.dso_simple),
            _figure_value(p.cei),
            _figure_value(p.average_days_delinquent),
            p.dso_simple.reason or p.dso_countback.reason or p.cei.reason or "",
        ]
        for p in series
    ]


def _drafting_cost_table(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Drafting cost per model: drafts, requests and tokens per draft, cost per 100 drafts."""
    return (
        ["model", "drafts", "requests_per_draft", "tokens_per_draft", "per_100_drafts"],
        [
            [
                m.model_name,
                m.drafts,
                m.requests_per_draft,
                m.tokens_per_draft,
                "not in the price table"
                if m.cost_per_100_drafts_usd is None
                else f"${m.cost_per_100_drafts_usd}",
            ]  # fmt: skip
            for m in data.get("drafting_cost", [])
        ],
    )


def _console_tables(
    data: dict[str, Any], money: Any = None, month: Any = None
) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Every console table as (header, rows): the page shows them (``money`` formats amounts as
    money, ``month`` names months in the reader's locale), the CSV export sends them (plain
    decimals and ``2025-06``, the defaults)."""
    series: list[metrics.MonthPoint] = data["series"]
    fmt = money or _major
    mon = month or (lambda d: d.strftime("%Y-%m"))
    cash_rows = [
        [mon(p.period.start), cur, fmt(amount, cur)]
        for p in series
        for cur, amount in sorted(p.cash_collected.amounts.items())
    ]
    dso_rows = _dso_rows(series, mon)
    aging_rows = [
        [cur, b.value, fmt(row.amounts[b], cur), row.counts[b]]
        for cur, row in data["aging"].items()
        for b in metrics.BUCKETS
    ]
    promise_rows = [
        [
            mon(p.period.start),
            p.promise_adherence.inputs.get("kept", 0),
            p.promise_adherence.inputs.get("missed", 0),
            p.promise_adherence.inputs.get("pending", 0),
            _figure_value(p.promise_adherence),
        ]
        for p in series
    ]
    exposure_rows = [
        [
            r["currency"],
            fmt(r["promise_exposure_minor"], r["currency"]),
            fmt(r["plan_exposure_minor"], r["currency"]),
            fmt(r["dispute_exposure_minor"], r["currency"]),
        ]
        for r in data["exposure"].rows()
    ]
    return {
        "cash_collected": (["month", "currency", "cash_collected"], cash_rows),
        "dso": (
            [
                "month",
                "currency",
                "dso_countback_days",
                "dso_simple_days",
                "cei_percent",
                "average_days_delinquent",
                "note",
            ],
            dso_rows,
        ),
        "aging": (["currency", "bucket", "outstanding", "invoices"], aging_rows),
        "promise_adherence": (
            ["month", "kept", "missed", "pending", "adherence_percent"],
            promise_rows,
        ),
        "exposure": (
            ["currency", "promise_exposure", "plan_exposure", "dispute_exposure"],
            exposure_rows,
        ),
        "drafting_cost": _drafting_cost_table(data),
    }


def _console_charts(data: dict[str, Any], locale: str) -> dict[str, Any]:
    series: list[metrics.MonthPoint] = data["series"]
    labels = [month_short(p.period.start, locale=locale) for p in series]
    charts: dict[str, Any] = {"cash": [], "aging": [], "exposure": []}
    for cur in data["currencies"]:
        values = [p.cash_collected.amounts.get(cur) for p in series]
        if any(v for v in values):
            charts["cash"].append(
                bar_chart(
                    f"Cash collected per month ({cur})",
                    labels,
                    [None if v is None else float(v) for v in values],
                    _money_fmt(cur),
                )
            )
    charts["dso"] = line_chart(
        "DSO by month",
        labels,
        {
            "DSO (countback)": [p.dso_countback.value for p in series],
            "DSO (simple)": [p.dso_simple.value for p in series],
            "Avg days delinquent": [p.average_days_delinquent.value for p in series],
        },
        _days_fmt,
    )
    charts["cei"] = line_chart(
        "Collection effectiveness index by month",
        labels,
        {"CEI": [p.cei.value for p in series]},
        _pct_fmt,
        fixed_max=100.0,
    )
    charts["promise"] = bar_chart(
        "Promise adherence by month",
        labels,
        [p.promise_adherence.value for p in series],
        _pct_fmt,
        colour=PALETTE[2],
        fixed_max=100.0,
    )
    for cur, row in data["aging"].items():
        charts["aging"].append(aging_chart(f"Outstanding by aging bucket ({cur})", row))
    for r in data["exposure"].rows():
        cur = r["currency"]
        charts["exposure"].append(
            bar_chart(
                f"Exposure ({cur})",
                ["Promises", "Payment plans", "Disputes"],
                [
                    float(r["promise_exposure_minor"]),
                    float(r["plan_exposure_minor"]),
                    float(r["dispute_exposure_minor"]),
                ],
                _money_fmt(cur),
                colour=PALETTE[1],
            )
        )
    return charts


@router.get("/api/console", response_model=dict[str, Any])
def console_api(
    user: ConsoleViewer,
    db: DbSession,
    end: Annotated[str | None, Query(max_length=10)] = None,
    months: Annotated[int, Query(ge=1, le=36)] = 12,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
) -> dict[str, Any]:
    """The CFO console's tables as JSON: cash collected, DSO and CEI by month, aging, promise
    adherence and exposure."""
    data = _console_data(db, user, end, months, segment_id, owner_id, currency)
    tables = _console_tables(data)
    return {
        "end": data["end"].isoformat(),
        "note": data["note"],
        "tables": {
            name: [dict(zip(header, row, strict=True)) for row in rows]
            for name, (header, rows) in tables.items()
        },
    }


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
def console_page(
    request: Request,
    user: ConsoleViewer,
    db: DbSession,
    end: Annotated[str | None, Query(max_length=10)] = None,
    months: Annotated[int, Query(ge=1, le=36)] = 12,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
) -> HTMLResponse:
    data = _console_data(db, user, end, months, segment_id, owner_id, currency)
    latest, to_date = _console_kpi_periods(data["series"], org_today(db, user.org_id))
    query = {
        k: v
        for k, v in {
            "end": data["end"].isoformat(),
            "months": months,
            "segment_id": segment_id,
            "owner_id": owner_id,
            "currency": data["scope"].currency,
        }.items()
        if v is not None
    }
    return _render(
        request,
        "console.html",
        user,
        data=data,
        latest=latest,
        to_date=to_date,
        charts=_console_charts(data, locale_from_header(request.headers.get("accept-language"))),
        tables=_console_tables(data, money=_money_text, month=_month_words(request)),
        query="&".join(f"{k}={v}" for k, v in query.items()),
        segments=_segments(db, user.org_id),
        owners=_owners(db, user.org_id),
        segment_id=segment_id,
        owner_id=owner_id,
        months=months,
        org=db.get(Organisation, user.org_id),
        generated_at=clock.now(),
    )


def _month_words(request: Request) -> Any:
    """A month as the reader's locale names it ("Jun 2025", "Juni 2025"), for the page's tables."""
    locale = locale_from_header(request.headers.get("accept-language"))

    def month(start: date) -> str:
        return period_words(start, metrics.Period.month(start.year, start.month).end, locale=locale)

    return month


def _console_kpi_periods(
    series: list[metrics.MonthPoint], today: date
) -> tuple[metrics.MonthPoint | None, metrics.MonthPoint | None]:
    """The headline figures: the last complete month, and the month to date beside it (a month
    that has only begun is never the headline: five days of sales do not make a month's DSO).
    A month is complete once its last day is over."""
    if not series:
        return None, None
    last = series[-1]
    whole = metrics.Period.month(last.period.end.year, last.period.end.month)
    if (last.period == whole and last.period.end < today) or len(series) == 1:
        return last, None
    return series[-2], last


@router.get("/console/export/{table}.csv", include_in_schema=False)
def console_csv(
    table: Annotated[str, Path(max_length=40)],
    user: Exporter,
    db: DbSession,
    end: Annotated[str | None, Query(max_length=10)] = None,
    months: Annotated[int, Query(ge=1, le=36)] = 12,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
) -> Response:
    if table not in CONSOLE_TABLES:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"No console table {table!r}; export one of {', '.join(CONSOLE_TABLES)}.",
        )
    data = _console_data(db, user, end, months, segment_id, owner_id, currency)
    header, rows = _console_tables(data)[table]
    return _csv(f"{table}-{data['end'].isoformat()}.csv", header, rows)
