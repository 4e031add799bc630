"""The ledger's own records beyond money: organisations (tenants), whether a contact may be
e-mailed (opt-out, bounce), and the statement of account as a PDF.

Why apart: these read and change customers and contacts, not invoices' balances, and many domains
(outreach, replies, portal) need them.
"""
