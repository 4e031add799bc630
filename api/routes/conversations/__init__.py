"""Conversation routes: the thread with a payer, a person's own messages, payer replies and
their triage, and the statement of account.
"""
