"""Disputes over the API: intake, the status workflow, credits, evidence files, SLA snapshot.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from api.deps import AppSettings, DbSession
from api.routes.commitments.schemas import (
    ERRORS,
    CreditGranter,
    CreditIn,
    DisputeIn,
    DisputeManager,
    DisputeOut,
    EvidenceOut,
    Id,
    SlaSnapshotOut,
    StatusIn,
    Viewer,
    dispute_out,
)
from memory.models import (
    DisputeStatus,
    utcnow,
)
from tools.commitments import disputes

router = APIRouter(tags=["commitments"])


@router.get("/api/disputes", response_model=list[DisputeOut])
def list_disputes(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: DisputeStatus | None = None,
) -> list[DisputeOut]:
    now = utcnow()
    rows = disputes.list_disputes(
        db, user.org_id, customer_id=customer_id, statuses=[status] if status else None
    )
    return [dispute_out(d, now) for d in rows]


@router.get("/api/disputes/sla", response_model=SlaSnapshotOut)
def sla_snapshot(db: DbSession, user: Viewer) -> SlaSnapshotOut:
    """SLA Snapshot: open disputes, how many breach their status clock, median age (hours)."""
    s = disputes.sla_snapshot(db, user.org_id)
    return SlaSnapshotOut(
        **s.__dict__, sla_hours={k.value: v for k, v in disputes.SLA_HOURS.items()}
    )


@router.post("/api/disputes", response_model=DisputeOut, status_code=201, responses=ERRORS)
def open_dispute(body: DisputeIn, db: DbSession, user: DisputeManager) -> DisputeOut:
    d = disputes.open_dispute(
        db,
        user.org_id,
        invoice_id=body.invoice_id,
        reason=body.reason,
        description=body.description,
        source=body.source,
        actor=user,
    )
    db.commit()
    return dispute_out(d, utcnow())


@router.get("/api/disputes/{dispute_id}", response_model=DisputeOut, responses=ERRORS)
def get_dispute(dispute_id: Id, db: DbSession, user: Viewer) -> DisputeOut:
    return dispute_out(disputes.get_dispute(db, user.org_id, dispute_id), utcnow())


@router.post("/api/disputes/{dispute_id}/status", response_model=DisputeOut, responses=ERRORS)
def change_status(
    dispute_id: Id, body: StatusIn, db: DbSession, user: DisputeManager
) -> DisputeOut | JSONResponse:
    d = disputes.change_status(db, user.org_id, dispute_id, body.status, actor=user, note=body.note)
    db.commit()
    return dispute_out(d, utcnow())


@router.post("/api/disputes/{dispute_id}/credit", response_model=DisputeOut, responses=ERRORS)
def propose_credit(
    dispute_id: Id, body: CreditIn, db: DbSession, user: CreditGranter
) -> DisputeOut | JSONResponse:
    """Resolve with a credit: granted within your limit, else stored for an approver."""
    out = disputes.propose_credit(
        db, user.org_id, dispute_id, amount_minor=body.amount_minor, actor=user, note=body.note
    )
    db.commit()
    return dispute_out(out.dispute, utcnow(), out.message)


@router.post(
    "/api/disputes/{dispute_id}/credit/approve", response_model=DisputeOut, responses=ERRORS
)
def approve_credit(dispute_id: Id, db: DbSession, user: CreditGranter) -> DisputeOut | JSONResponse:
    out = disputes.approve_credit(db, user.org_id, dispute_id, approver=user)
    db.commit()
    return dispute_out(out.dispute, utcnow(), out.message)


def read_upload(upload: UploadFile) -> bytes:
    """At most one byte over the evidence limit is read: enough to refuse, never the whole file."""
    return upload.file.read(disputes.MAX_EVIDENCE_BYTES + 1)


@router.post(
    "/api/disputes/{dispute_id}/evidence",
    response_model=EvidenceOut,
    status_code=201,
    responses=ERRORS,
)
def add_evidence(
    dispute_id: Id,
    db: DbSession,
    user: DisputeManager,
    settings: AppSettings,
    file: Annotated[UploadFile, File(description="PDF, PNG, JPEG, text or CSV; at most 5 MB")],
    slot: Annotated[str, Form(max_length=64)] = "other",
) -> EvidenceOut:
    data = read_upload(file)
    item = disputes.add_evidence(
        db,
        user.org_id,
        dispute_id,
        filename=file.filename or "evidence",
        data=data,
        content_type=file.content_type,
        slot=slot,
        evidence_dir=settings.evidence_dir,
        uploaded_by=f"{user.name} ({user.role.value})",
        actor=user,
    )
    db.commit()
    return EvidenceOut(
        id=item.id,
        slot=item.slot,
        filename=item.filename,
        content_type=item.content_type,
        size_bytes=item.size_bytes,
        sha256=item.sha256,
        uploaded_by=item.uploaded_by,
        uploaded_at=item.uploaded_at,
    )


@router.get("/api/disputes/{dispute_id}/evidence/{evidence_id}", responses=ERRORS)
def download_evidence(
    dispute_id: Id, evidence_id: Id, db: DbSession, user: Viewer, settings: AppSettings
) -> FileResponse:
    d = disputes.get_dispute(db, user.org_id, dispute_id)
    item = next((e for e in d.evidence if e.id == evidence_id), None)
    if item is None:
        raise HTTPException(404, "Evidence not found on this dispute.")
    path = disputes.evidence_path(settings.evidence_dir, item)
    if not path.is_file():
        raise HTTPException(404, "The evidence file is missing from the evidence directory.")
    return FileResponse(
        path,
        media_type=item.content_type,
        filename=item.filename,
        headers={"X-Content-Type-Options": "nosniff"},
        content_disposition_type="attachment",
    )
