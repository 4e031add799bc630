"""Conversations with payers: threads, a person's own messages and the account timeline, reading
inbound e-mail from the IMAP mailbox, and accepting a reply-triage proposal.

Why one domain: everything a payer writes back, and what people write to them, belongs to one
thread.
"""
