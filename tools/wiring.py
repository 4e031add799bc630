"""The composition root of the tool domains: each lower domain's hooks filled with the higher
domain's function (``tools.kit.hooks``).

Why one module: the tool domains are layered and a lower domain may not import a higher one, so
the few calls that must go upward are declared as hooks where they are made and connected here, in
one place that reads as the list of them. Importing this module is what connects them: every entry
point does it (``api/__init__.py``, so the app, the CLI and the workers; ``tests/conftest.py``),
and it refuses to finish with a hook left empty. A process that never imported it fails on the
first call through a hook (``HookNotWired``) instead of skipping the side effect.
"""

from __future__ import annotations

from tools.cashapp import stripe_payouts
from tools.commitments import disputes, plans
from tools.delivery import outbox
from tools.drafts import service as drafts
from tools.inbox import notifications
from tools.kit import hooks
from tools.outreach import nudges
from tools.payments import posting, stripe_pay

# An escalated or credited dispute notifies the people who work disputes (inbox above commitments).
disputes.notify_roles.register(notifications.notify_roles)
# An installment paid by hand is posted on the one posting path (payments above commitments).
plans.post_payment.register(posting.post_payment)
# An approved or released draft is queued in the outbox (delivery above drafts).
drafts.enqueue.register(outbox.enqueue_draft)
# A held nudge is decided again as its sender's nudge (outreach above drafts).
drafts.decide_nudge_again.register(nudges.decide_nudge_again)
# A PaymentIntent's webhook asks Cash App Assist about its payout line (cashapp above payments).
stripe_pay.payout_lines.register(stripe_payouts)

if hooks.unwired():  # a hook declared below but not connected above
    raise hooks.HookNotWired(f"tools.wiring leaves these hooks empty: {hooks.unwired()}")
