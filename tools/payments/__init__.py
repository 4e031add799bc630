"""Payments: posting a payment to invoice balances (keeping credit, advancing promises and plans),
and Stripe PaymentIntents and webhooks in the organisation's own account.

Why apart: every way cash arrives (Stripe, the portal, Cash App Assist, a manual post) ends in
the one posting path here, so a payment is applied the same way whatever its source.
"""
