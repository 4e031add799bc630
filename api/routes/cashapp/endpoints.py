"""Cash App Assist: bank files and remittances in, the exceptions queue, applied cash out.

Pages (``/cash``) and the same operations as JSON (``/api/cash/...``). Every write names its
access-matrix permission here and is checked again in ``tools/cashapp`` where it happens
(``apply_cash``: import, accept, split, re-assign, park, undo, ask the co-pilot or ignore its
proposal; ``close_cash_period``; ``export``). Bad input is a 4xx (or a flash on the page) that says
what to do, and nothing is written. After an import the co-pilot (``agent.remittance``) reads the
remittance text of at most ``PLIXO_CASH_COPILOT_PER_IMPORT`` lines left without a confident match
and stores a ``copilot_split`` proposal on each it can read; a person accepts it like any
suggestion, or ignores it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from agent.remittance import propose_for_import, propose_split
from api.deps import AppSettings, Clock, CsrfChecked, DbSession, require, template_context
from api.pages import flash as _flash
from api.pages import templates
from memory.models import (
    CashImport,
    CashLine,
    CashLineStatus,
    Customer,
    Invoice,
    User,
)
from memory.money import MoneyError, format_money, parse_amount, to_decimal
from tools.cashapp import applying, copilot, export, intake, service, stripe_payouts
from tools.cashapp.parsers import MAX_FILE_BYTES, CashFileError
from tools.cashapp.schemas import Allocation, Suggestion
from tools.commitments.plans import PolicyRefused
from tools.commitments.promises import CommitmentError

router = APIRouter(tags=["cash app"])

Viewer = Annotated[User, Depends(require("view_account"))]
CashClerk = Annotated[User, Depends(require("apply_cash"))]
Closer = Annotated[User, Depends(require("close_cash_period"))]
Exporter = Annotated[User, Depends(require("export"))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
Period = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")]
ADJUSTMENTS = ("", "discount", "bank_fee")


# --- shared -------------------------------------------------------------------------------------


async def _read_upload(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HTTPException(413, f"The file is larger than {MAX_FILE_BYTES // 2**20} MB.")
    if not data:
        raise HTTPException(400, "The file is empty; choose the bank statement to upload.")
    return data


def _names(session: Session, org_id: int, lines: list[CashLine]) -> dict[str, dict[int, str]]:
    """Invoice numbers and customer names for the suggestions shown (never raw ids)."""
    inv_ids: set[int] = set()
    cust_ids: set[int] = set()
    for line in lines:
        for s in line.suggestions or []:
            cust_ids.add(s["customer_id"])
            inv_ids.update(a["invoice_id"] for a in s["allocations"] if a["invoice_id"])
        if line.customer_id:
            cust_ids.add(line.customer_id)
    invoices = dict(
        session.execute(
            select(Invoice.id, Invoice.number).where(
                Invoice.org_id == org_id, Invoice.id.in_(inv_ids)
            )
        ).all()
    )
    customers = dict(
        session.execute(
            select(Customer.id, Customer.name).where(
                Customer.org_id == org_id, Customer.id.in_(cust_ids)
            )
        ).all()
    )
    return {"invoices": invoices, "customers": customers}


def _apply_and_commit(
    db: Session, user: User, line_id: int, suggestion: Suggestion, note: str | None, now: Any
) -> applying.Applied:
    try:
        done = applying.apply_line(
            db, user.org_id, line_id, actor=user, suggestion=suggestion, note=note, now=now
        )
    except Exception:
        db.rollback()
        raise
    db.commit()
    return done


def _suggestion_from_parts(
    db: Session, org_id: int, line: CashLine, parts: list[PartIn], on_account_minor: int
) -> Suggestion:
    """A person's split or re-assignment: invoice numbers and amounts, the rest on account."""
    allocations: list[Allocation] = []
    customer_id: int | None = None
    for part in parts:
        inv = db.scalar(
            select(Invoice).where(Invoice.org_id == org_id, Invoice.number == part.invoice_number)
        )
        if inv is None:
            raise CommitmentError(f"There is no invoice {part.invoice_number!r}.")
        if customer_id is not None and inv.customer_id != customer_id:
            raise CommitmentError("All parts of one bank line go to invoices of one customer.")
        customer_id = inv.customer_id
        allocations.append(
            Allocation(
                inv.id,
                part.amount_minor,
                part.adjustment_kind or None,
                part.adjustment_minor if part.adjustment_kind else 0,
            )
        )
    if on_account_minor:
        allocations.append(Allocation(None, on_account_minor))
    if customer_id is None:
        customer_id = line.customer_id or _suggested_customer(line)
    if customer_id is None:
        raise CommitmentError("Name at least one invoice, so plixo knows whose money this is.")
    kind = "one_to_many" if len(parts) > 1 else "exact"
    if any(p.adjustment_minor for p in parts):
        kind = "short_pay"
    return Suggestion(customer_id, kind, 100, ["applied by a person"], allocations)


def _suggested_customer(line: CashLine) -> int | None:
    return line.suggestions[0]["customer_id"] if line.suggestions else None


def _copilot_after_import(
    db: Session, org_id: int, import_id: int, settings: Any, now: Any
) -> list[dict[str, Any]]:
    """The co-pilot's split proposals for the import's waiting lines (committed; the import is
    committed before, so a failure here loses no line and is reported, not raised)."""
    try:
        outcomes = propose_for_import(db, org_id, import_id, settings, now=now)
    except Exception as exc:  # the import stands; the lines wait without a proposal
        db.rollback()
        return [{"proposed": False, "reason": f"The co-pilot could not read the lines: {exc}"}]
    db.commit()
    return [o.as_dict() for o in outcomes]


def _ask_copilot(db: Session, user: User, line_id: int, settings: Any, now: Any) -> Any:
    applying.require(user, "apply_cash")
    try:
        outcome = propose_split(db, user.org_id, line_id, settings, actor=user, now=now)
    except Exception:
        db.rollback()
        raise
    db.commit()
    return outcome


# --- JSON API -----------------------------------------------------------------------------------


class PartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_number: str = Field(min_length=1, max_length=64)
    amount_minor: int = Field(ge=0, le=10**13)
    adjustment_kind: Literal["discount", "bank_fee"] | None = None
    adjustment_minor: int = Field(default=0, ge=0, le=10**13)


class ApplyIn(BaseModel):
    """Accept suggestion ``suggestion`` (0 = the best), or give the parts yourself."""

    model_config = ConfigDict(extra="forbid")

    suggestion: int | None = Field(default=None, ge=0, le=9)
    parts: list[PartIn] = Field(default_factory=list, max_length=50)
    on_account_minor: int = Field(default=0, ge=0, le=10**13)
    note: str | None = Field(default=None, max_length=2000)


class ParkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


def _line_out(line: CashLine) -> dict[str, Any]:
    return {
        "id": line.id,
        "line_no": line.line_no,
        "booked_on": line.booked_on.isoformat(),
        "amount_minor": line.amount_minor,
        "currency": line.currency,
        "payer_name": line.payer_name,
        "reference": line.reference,
        "status": line.status.value,
        "best_score": line.best_score,
        "suggestions": line.suggestions,
        "decision": line.decision,
        "note": line.note,
    }


@router.post("/api/cash/imports")
async def api_import(
    db: DbSession,
    user: CashClerk,
    clock: Clock,
    settings: AppSettings,
    file: Annotated[UploadFile, File(description="CAMT.053, MT940, BAI2, CSV, PDF or e-mail")],
    profile: Annotated[str | None, Form(max_length=80)] = None,
) -> JSONResponse:
    data = await _read_upload(file)
    name = file.filename or "upload"
    report, proposals = await run_in_threadpool(
        _import, db, user, data, name, profile, settings, clock()
    )
    return JSONResponse({**report.as_dict(), "copilot": proposals})


def _import(
    db: Session,
    user: User,
    data: bytes,
    filename: str,
    profile: str | None,
    settings: Any,
    now: Any,
) -> tuple[service.ImportReport, list[dict[str, Any]]]:
    """Import and commit, then ask the co-pilot about the waiting lines; in the thread pool
    (a statement of 10,000 lines is seconds of ledger work, never on the event loop)."""
    try:
        report = intake.import_cash_file(
            db, user.org_id, data, filename=filename, actor=user, profile=profile, now=now
        )
    except Exception:
        db.rollback()
        raise
    db.commit()
    return report, _copilot_after_import(db, user.org_id, report.import_id, settings, now)


@router.get("/api/cash/lines")
def api_lines(
    db: DbSession,
    user: Viewer,
    status: Annotated[CashLineStatus, Query()] = CashLineStatus.EXCEPTION,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    rows = db.scalars(
        select(CashLine)
        .where(CashLine.org_id == user.org_id, CashLine.status == status)
        .order_by(CashLine.booked_on, CashLine.id)
        .limit(limit)
    )
    return [_line_out(r) for r in rows]


@router.get("/api/cash/cleared")
def api_cleared(
    db: DbSession, user: Viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Bank lines cleared against a Stripe payout (posted nothing), with the payout and reasons."""
    return [
        {
            **_line_out(r),
            "payout_id": (r.decision or {}).get("payout_id"),
            "applied_by": r.applied_by,
        }
        for r in stripe_payouts.cleared_bank_lines(db, user.org_id, limit=limit)
    ]


@router.post("/api/cash/lines/{line_id}/apply")
def api_apply(
    line_id: Id, body: ApplyIn, db: DbSession, user: CashClerk, clock: Clock
) -> dict[str, Any]:
    line = applying.get_line(db, user.org_id, line_id)
    if body.parts or body.on_account_minor:
        sugg = _suggestion_from_parts(db, user.org_id, line, body.parts, body.on_account_minor)
    else:
        index = body.suggestion or 0
        if index >= len(line.suggestions or []):
            raise CommitmentError("There is no such suggestion; give the parts instead.")
        sugg = Suggestion.from_dict(line.suggestions[index])
    try:
        done = _apply_and_commit(db, user, line_id, sugg, body.note, clock())
    except PolicyRefused as exc:
        # The cash API answers every guardrail refusal with 403, a block included; the app's
        # handler would answer a block with 422 (what the plan and credit routes say).
        raise HTTPException(403, str(exc)) from exc
    return {**_line_out(done.line), "payments": [p.id for p in done.payments]}


@router.post("/api/cash/lines/{line_id}/park")
def api_park(
    line_id: Id, body: ParkIn, db: DbSession, user: CashClerk, clock: Clock
) -> dict[str, Any]:
    line = applying.park_line(db, user.org_id, line_id, actor=user, note=body.note, now=clock())
    db.commit()
    return _line_out(line)


@router.post("/api/cash/lines/{line_id}/copilot")
def api_ask_copilot(
    line_id: Id, db: DbSession, user: CashClerk, clock: Clock, settings: AppSettings
) -> dict[str, Any]:
    """Ask the co-pilot to read the line's remittance text and propose a split (stored on the
    line as a ``copilot_split`` suggestion; nothing is applied), or say why it proposes none."""
    outcome = _ask_copilot(db, user, line_id, settings, clock())
    line = applying.get_line(db, user.org_id, line_id)
    return {**outcome.as_dict(), "line": _line_out(line)}


@router.post("/api/cash/lines/{line_id}/copilot/ignore")
def api_ignore_copilot(line_id: Id, db: DbSession, user: CashClerk, clock: Clock) -> dict[str, Any]:
    """Set the co-pilot's proposal aside (removed from the line, audited)."""
    line = copilot.ignore_proposal(db, user.org_id, line_id, actor=user, now=clock())
    db.commit()
    return _line_out(line)


@router.post("/api/cash/lines/{line_id}/undo")
def api_undo(line_id: Id, db: DbSession, user: CashClerk, clock: Clock) -> dict[str, Any]:
    line = applying.undo_line(db, user.org_id, line_id, actor=user, now=clock())
    db.commit()
    return _line_out(line)


@router.get("/api/cash/export", response_model=None)
def api_export(
    db: DbSession,
    user: Exporter,
    period: Period,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> dict[str, Any] | PlainTextResponse:
    data = export.applied_cash(db, user.org_id, period, actor=user)
    if format == "csv":
        return PlainTextResponse(
            export.to_csv(data),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="applied-cash-{period}.csv"'},
        )
    return data


@router.post("/api/cash/periods/{period}/close")
def api_close(
    period: Annotated[str, Path(pattern=r"^\d{4}-\d{2}$")],
    db: DbSession,
    user: Closer,
    clock: Clock,
) -> dict[str, Any]:
    row = applying.close_period(db, user.org_id, period, actor=user, now=clock())
    db.commit()
    return {"period": row.period, "closed_by": row.closed_by, "closed_at": row.closed_at}


# --- pages --------------------------------------------------------------------------------------


def _money(minor: int, currency: str) -> str:
    return format_money(minor, currency)


@router.get("/cash", response_class=HTMLResponse, include_in_schema=False)
def cash_page(request: Request, db: DbSession, user: Viewer, clock: Clock) -> HTMLResponse:
    org = user.org_id
    waiting = service.waiting_lines(db, org)
    done = list(
        db.scalars(
            select(CashLine)
            .where(
                CashLine.org_id == org,
                CashLine.status.in_([CashLineStatus.APPLIED, CashLineStatus.PARKED]),
            )
            .order_by(CashLine.applied_at.desc(), CashLine.id.desc())
            .limit(100)
        )
    )
    cleared = stripe_payouts.cleared_bank_lines(db, org)
    imports = list(
        db.scalars(
            select(CashImport)
            .where(CashImport.org_id == org)
            .order_by(CashImport.id.desc())
            .limit(10)
        )
    )
    flash = request.session.pop("flash", None)
    ctx = template_context(
        request,
        user,
        flash=flash,
        waiting=waiting,
        done=done,
        cleared=cleared,
        imports=imports,
        names=_names(db, org, waiting + done),
        money=_money,
        plain=lambda minor, cur: str(to_decimal(minor, cur)),
        period=clock().date().strftime("%Y-%m"),
    )
    return templates.TemplateResponse(request, "cashapp.html", ctx)


@router.post("/cash/import", include_in_schema=False)
async def cash_import_form(
    request: Request,
    db: DbSession,
    user: CashClerk,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
    file: Annotated[UploadFile, File()],
) -> RedirectResponse:
    data = await _read_upload(file)
    name = file.filename or "upload"
    try:
        r, proposals = await run_in_threadpool(
            _import, db, user, data, name, None, settings, clock()
        )
    except (CashFileError, CommitmentError) as exc:
        _flash(request, str(exc), "bad")
        return RedirectResponse("/cash", status_code=303)
    proposed = sum(1 for p in proposals if p["proposed"])
    summary = (
        f"Imported {r.filename}: {r.lines_new} new line{'s' if r.lines_new != 1 else ''}, "
        f"{r.auto_applied} applied automatically, {r.exceptions} waiting for you"
        f"{f', {len(r.duplicates)} already imported (skipped)' if r.duplicates else ''}"
        f"{f'; the co-pilot proposed {proposed} split(s) for you to check' if proposed else ''}."
    )
    problems = [e.message for e in r.errors] + ([r.notice] if r.notice else [])
    _flash(request, summary, "bad" if r.errors else "ok", problems)
    return RedirectResponse("/cash", status_code=303)


@router.post("/cash/lines/{line_id}/accept", include_in_schema=False)
def cash_accept_form(
    request: Request,
    line_id: Id,
    db: DbSession,
    user: CashClerk,
    clock: Clock,
    _csrf: CsrfChecked,
    suggestion: Annotated[int, Form(ge=0, le=9)] = 0,
) -> RedirectResponse:
    try:
        line = applying.get_line(db, user.org_id, line_id)
        if suggestion >= len(line.suggestions or []):
            raise CommitmentError("That suggestion is gone; reload the page.")
        _apply_and_commit(
            db, user, line_id, Suggestion.from_dict(line.suggestions[suggestion]), None, clock()
        )
        _flash(request, f"Applied {_money(line.amount_minor, line.currency)}.")
    except CommitmentError as exc:
        _flash(request, str(exc), "bad", _reasons(exc))
    return RedirectResponse("/cash", status_code=303)


def _reasons(exc: Exception) -> list[str]:
    if isinstance(exc, PolicyRefused):
        return [str(r.get("message")) for r in exc.decision.get("reasons", [])]
    return []


@router.post("/cash/lines/{line_id}/split", include_in_schema=False)
def cash_split_form(
    request: Request,
    line_id: Id,
    db: DbSession,
    user: CashClerk,
    clock: Clock,
    _csrf: CsrfChecked,
    invoice_number: Annotated[list[str], Form()],
    amount: Annotated[list[str], Form()],
    adjustment_kind: Annotated[list[str], Form()],
    adjustment: Annotated[list[str], Form()],
    on_account: Annotated[str, Form(max_length=30)] = "",
) -> RedirectResponse:
    """Split or re-assign: each row an invoice number, an amount and an optional write-off."""
    try:
        line = applying.get_line(db, user.org_id, line_id)
        parts = _parts_from_form(line.currency, invoice_number, amount, adjustment_kind, adjustment)
        rest = parse_amount(on_account, line.currency) if on_account.strip() else 0
        sugg = _suggestion_from_parts(db, user.org_id, line, parts, rest)
        _apply_and_commit(db, user, line_id, sugg, "split by hand", clock())
        _flash(request, f"Applied {_money(line.amount_minor, line.currency)} as you split it.")
    except (CommitmentError, MoneyError) as exc:
        _flash(request, str(exc), "bad", _reasons(exc))
    return RedirectResponse("/cash", status_code=303)


def _parts_from_form(
    currency: str, numbers: list[str], amounts: list[str], kinds: list[str], adjustments: list[str]
) -> list[PartIn]:
    if not len(numbers) == len(amounts) == len(kinds) == len(adjustments):
        raise CommitmentError("The form is incomplete; reload the page and retry.")
    parts: list[PartIn] = []
    for number, amount, kind, adj in zip(numbers, amounts, kinds, adjustments, strict=True):
        if not number.strip():
            continue
        if kind not in ADJUSTMENTS:
            raise CommitmentError("An adjustment is a discount or a bank fee.")
        parts.append(
            PartIn(
                invoice_number=number.strip(),
                amount_minor=parse_amount(amount or "0", currency),
                adjustment_kind=kind or None,  # type: ignore[arg-type]
                adjustment_minor=parse_amount(adj or "0", currency) if kind else 0,
            )
        )
    return parts


@router.post("/cash/lines/{line_id}/park", include_in_schema=False)
def cash_park_form(
    request: Request,
    line_id: Id,
    db: DbSession,
    user: CashClerk,
    clock: Clock,
    _csrf: CsrfChecked,
    note: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    try:
        line = applying.park_line(db, user.org_id, line_id, actor=user, note=note, now=clock())
        db.commit()
        _flash(request, f"Parked {_money(line.amount_minor, line.currency)} as unapplied cash.")
    except CommitmentError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/cash", status_code=303)


@router.post("/cash/lines/{line_id}/copilot", include_in_schema=False)
def cash_copilot_form(
    request: Request,
    line_id: Id,
    db: DbSession,
    user: CashClerk,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
) -> RedirectResponse:
    """The page's "Ask the co-pilot" button: a proposal on the line, or why there is none."""
    try:
        outcome = _ask_copilot(db, user, line_id, settings, clock())
        if outcome.proposed:
            _flash(request, "The co-pilot proposed a split: check it against the remittance.")
        else:
            _flash(request, outcome.reason, "bad")
    except CommitmentError as exc:
        _flash(request, str(exc), "bad")
    return RedirectResponse("/cash", status_code=303)


@router.post("/cash/lines/{line_id}/copilot/ignore", include_in_schema=False)
def cash_copilot_ignore_form(
    request: Request, line_id: Id, db: DbSession, user: CashClerk, clock: Clock, _csrf: CsrfChecked
) -> RedirectResponse:
    try:
        copilot.ignore_proposal(db, user.org_id, line_id, actor=user, now=clock())
        db.commit()
        _flash(request, "The co-pilot's proposal is set aside.")
    except CommitmentError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/cash", status_code=303)


@router.post("/cash/lines/{line_id}/undo", include_in_schema=False)
def cash_undo_form(
    request: Request, line_id: Id, db: DbSession, user: CashClerk, clock: Clock, _csrf: CsrfChecked
) -> RedirectResponse:
    try:
        line = applying.undo_line(db, user.org_id, line_id, actor=user, now=clock())
        db.commit()
        _flash(request, f"Undone: {_money(line.amount_minor, line.currency)} is back in the queue.")
    except CommitmentError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/cash", status_code=303)


@router.post("/cash/periods/close", include_in_schema=False)
def cash_close_form(
    request: Request,
    db: DbSession,
    user: Closer,
    clock: Clock,
    _csrf: CsrfChecked,
    period: Annotated[str, Form(pattern=r"^\d{4}-\d{2}$")],
) -> RedirectResponse:
    try:
        applying.close_period(db, user.org_id, period, actor=user, now=clock())
        db.commit()
        _flash(request, f"Cash period {period} is closed; its applications are final.")
    except CommitmentError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/cash", status_code=303)


@router.get("/cash/export", include_in_schema=False, response_model=None)
def cash_export_page(
    db: DbSession, user: Exporter, period: Period, format: Literal["json", "csv"] = "csv"
) -> dict[str, Any] | PlainTextResponse:
    return api_export(db, user, period, format)
