"""The hooks a lower tool domain calls a higher one through (``tools.kit.hooks``, ``tools.wiring``).

Why: the eight upward calls the tool domains used to make are hooks now; a process that forgot to
connect them must fail on the first call, never skip the notification, the outbox row or the
payment it stands for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tools.wiring  # noqa: F401 - what every entry point imports
from tools.cashapp import stripe_payouts
from tools.commitments import disputes, plans
from tools.delivery import outbox
from tools.drafts import service as drafts
from tools.inbox import notifications
from tools.kit import hooks
from tools.kit.hooks import Hook, HookNotWired
from tools.outreach import nudges
from tools.payments import posting, stripe_pay

ROOT = Path(__file__).resolve().parents[3]


def test_the_wiring_connects_every_hook_to_the_higher_domain() -> None:
    assert hooks.unwired() == []
    assert disputes.notify_roles.get() is notifications.notify_roles
    assert plans.post_payment.get() is posting.post_payment
    assert drafts.enqueue.get() is outbox.enqueue_draft
    assert drafts.decide_nudge_again.get() is nudges.decide_nudge_again
    assert stripe_pay.payout_lines.get() is stripe_payouts
    assert set(hooks.all_hooks()) >= {
        "commitments.disputes.notify_roles",
        "commitments.plans.post_payment",
        "drafts.service.enqueue",
        "drafts.service.decide_nudge_again",
        "payments.stripe_pay.payout_lines",
    }


def test_an_empty_hook_fails_loudly_and_a_second_provider_is_refused() -> None:
    hook: Hook[str] = Hook("tests.kit.an_empty_hook")
    try:
        with pytest.raises(HookNotWired, match="tests.kit.an_empty_hook"):
            hook.get()
        assert "tests.kit.an_empty_hook" in hooks.unwired()
        assert hook.register("first") == "first"
        assert hook.register("first") == "first"  # the same provider again changes nothing
        with pytest.raises(RuntimeError, match="already wired"):
            hook.register("second")
        assert hook.get() == "first"
    finally:
        hooks._ALL.pop("tests.kit.an_empty_hook", None)


def test_a_process_without_the_wiring_fails_instead_of_skipping_the_side_effect() -> None:
    """A lower domain imported alone (no entry point) has empty hooks; importing ``api`` (what
    the app, the CLI and the workers do first) fills them."""
    code = (
        "from tools.commitments import disputes\n"
        "from tools.kit.hooks import HookNotWired\n"
        "try:\n"
        "    disputes.notify_roles.get()\n"
        "except HookNotWired:\n"
        "    print('not wired')\n"
        "import api\n"
        "print('wired' if disputes.notify_roles.wired else 'still empty')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["not", "wired", "wired"]
