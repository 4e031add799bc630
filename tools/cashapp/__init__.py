"""Cash App Assist: bank statements and remittances in, matched to invoices, exceptions to people.

* ``parsers``  - CAMT.053, MT940, BAI2, CSV remittance lists (declared mappings), remittance
  advice as PDF or e-mail text: each becomes :class:`~tools.cashapp.schemas.BankLine` rows or
  per-line errors, never a half-read file;
* ``matching`` - candidate invoices ranked for each incoming amount, with a score and reasons;
* ``service``  - import (idempotent per bank line), the policy decision on auto-apply, and what a
  Collector does in the exceptions queue (accept, split, re-assign, park, undo), posted through
  :func:`tools.payments.posting.post_payment`;
* ``export``   - applied cash per period for the ledger of record (CSV / JSON).
"""
