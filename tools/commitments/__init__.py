"""Commitments: promises-to-pay, payment plans (installments), disputes (status, SLA timers,
evidence, reply templates) and the Commitment Radar.

Why one domain: these are what a payer has agreed or contested; payments advance them, and the
radar reads all three.
"""
