"""The dependencies every co-pilot tool receives (``RunContext[AgentDeps]``).

Like pydantic-ai's bank_support example: one dataclass carries the database session and the
caller's scope. Every tool reads ``ctx.deps.org_id`` and refuses anything outside it; when
``customer_id`` is set (the drafter, the reviser, triage) the tools also refuse other customers of
the same organisation, so a payer's text that asks about "the other accounts" finds nothing to
leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from memory import clock
from memory.config import Settings

if TYPE_CHECKING:  # chromadb is heavy to import; recall is optional for most runs
    from memory.recall import Recall


class OutOfScope(PermissionError):
    """A tool was asked about a customer outside the run's scope (same answer for any reason)."""


@dataclass
class AgentDeps:
    """What a co-pilot run may read: one organisation's ledger, as of one date.

    ``session``: the caller's SQLAlchemy session (tools only ``SELECT``);
    ``org_id``: the organisation every tool is scoped to;
    ``settings``: model, pay-link base URL, limits;
    ``as_of``: the organisation's date the run reasons about (aging, what is overdue);
    ``recall``: notes and replies search (optional; the recall tool says so when absent);
    ``now``: the moment the guardrails decide at (default: the real time, UTC);
    ``customer_id``: when set, tools refuse every other customer;
    ``pay_links``: already-issued mini-portal links by invoice number (else the stable link);
    ``prefetched``: ``invoice_detail`` answers read in bulk for this task's invoices (Autopilot
    reads a whole batch in a few queries; the tool still checks the customer scope);
    ``draft``: the drafter's task, ledger truth and instructions for this run (its
    ``@output_validator`` grounds each submitted draft against it; None for other agents).
    """

    session: Session
    org_id: int
    settings: Settings
    as_of: date
    recall: Recall | None = None
    now: datetime | None = None
    customer_id: int | None = None
    pay_links: dict[str, str] = field(default_factory=dict)
    prefetched: dict[str, dict[str, Any]] = field(default_factory=dict)
    draft: Any = None  # the drafter's DraftRun (agent.drafter): what its output validator checks

    def moment(self) -> datetime:
        return self.now or clock.now()

    def check_customer(self, customer_id: int) -> None:
        """Refuse a customer outside this run's scope (the organisation check is the tools')."""
        if self.customer_id is not None and customer_id != self.customer_id:
            raise OutOfScope(
                f"customer {customer_id} is outside this task: only customer "
                f"{self.customer_id} may be read"
            )
