"""Grounding: every amount, date, invoice number and link in a draft checked against the ledger
before anyone may approve or send it.

Why: a collection e-mail with a wrong figure damages trust more than no e-mail. The drafter
writes; grounding reads what it wrote back out of the plain text (not out of the model's own
claims) and compares each fact with the ledger. The same check runs at drafting, at revision, at
approval and at send time; one package keeps the four from drifting.

The parts, each importing only parts listed before it (``lint-imports`` holds them to that):

- ``extraction``: what a text states (amounts, dates, invoice numbers, links) and the language it
  is written in, read from the text alone.
- ``truth``: what the ledger lets a text to one customer state (``LedgerTruth``), read in batches.
- ``comparison``: the two compared; every statement the ledger does not back is a mismatch
  (``GroundingReport``, also the error the model is asked to fix).
- ``guardrail_facts``: the report and the outreach around it (switches, segment, contact,
  invoices, promises, touches) as the policies' ``send_draft`` facts.
- ``recheck``: a stored draft's current text through all of the above and the guardrails (edits,
  approvals, sends, the policy dry run).
- ``date_wording``: phrases true only on some days ("is due on", "overdue since"), read again on
  the day a draft leaves.
"""
