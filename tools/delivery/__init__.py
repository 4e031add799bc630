"""Delivery: the outbox (every outbound message is a row first), the send-time check, DKIM signing,
SMTP and Slack, the reply threads an outbound message opens, and the DBOS workflows that hand each
approved message over at most once.

Why apart: this is the only domain that lets anything leave; the guardrails and the send-time
check sit in front of it.
"""
