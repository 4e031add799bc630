"""Insights: Account 360, Today's Focus, receivables metrics (DSO, aging buckets), Renewal Risk, the
payment-risk score and the Data-Ready score.

Why apart: these only read the ledger; no write path depends on them.
"""
