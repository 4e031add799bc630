"""The ``apply_cash`` facts of one way to apply a line, the same for the importer and the posting.

Why one place: the importer decides from the matcher's view of the invoices and the posting (when
it decides again) from the ledger's rows; both must put the same facts to the policy engine, or a
line could be allowed by one and refused by the other. A written-off difference (a short-pay's
discount taken or bank fee) and an over-payment's surplus kept on account are measured against
the open balance of the invoices the line is put on, which the Controller's write-off rule
(``cash.short_pay_write_off``) and over-payment rule (``cash.over_payment_on_account``) cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.cashapp.schemas import Suggestion

#: The rule that lets plixo write off a short-pay's difference with no person (policies/rules.py).
WRITE_OFF_RULE = "cash.short_pay_write_off"


def apply_cash_facts(
    s: Suggestion, amount_minor: int, currency: str, balances: Mapping[int, int]
) -> dict[str, Any]:
    """The facts for ``s`` on a line of ``amount_minor``; ``balances`` are the open balances of
    the invoices it is put on (by id), before the line is applied."""
    facts: dict[str, Any] = {
        "confidence": max(0, min(100, s.score)),
        "amount_minor": amount_minor,
        "currency": currency,
        "match_kind": s.kind,
    }
    ids = {a.invoice_id for a in s.allocations if a.invoice_id is not None}
    if ids:
        facts["invoices_minor"] = sum(balances.get(i, 0) for i in ids) or None
    on_account = sum(a.amount_minor for a in s.allocations if a.invoice_id is None)
    if on_account:
        facts["on_account_minor"] = on_account
    offs = [a for a in s.allocations if a.adjustment_minor]
    if offs:
        kinds = {a.adjustment_kind for a in offs}
        # one kind per line (the matcher writes off one difference); mixed kinds are left for
        # the fact model to refuse, so the engine blocks rather than guesses
        facts["write_off_kind"] = kinds.pop() if len(kinds) == 1 else "mixed"
        facts["write_off_minor"] = sum(a.adjustment_minor for a in offs)
    return facts


def written_off_by_rule(decision: Mapping[str, Any] | None) -> bool:
    """Whether ``decision`` is an ``allow`` in which the Controller's write-off rule fired."""
    if not decision or decision.get("outcome") != "allow":
        return False
    return any(r.get("rule_id") == WRITE_OFF_RULE for r in decision.get("reasons", []))
