"""The shared kit every domain uses: the audit trail, permission checks where the write happens
(``guarded``), words for people instead of identifiers, CSV-safe cells, date wording and the
garbage-collector setting for batch jobs, and the hooks through which a lower domain calls a higher
one (filled by ``tools.wiring``).

Why a kit: these are the few things every domain needs; they import nothing from the domains, so
any domain can use them without a cycle.
"""
