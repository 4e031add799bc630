"""Grounding: every amount, date, invoice number and link in a draft checked against the ledger
before anyone may approve or send it.

Why apart: the same check runs at drafting, at revision, at approval and at send time; one home
keeps the four from drifting.
"""
