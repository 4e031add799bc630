"""Importing the ledger from CSV: invoices, customers and contacts through declared column mappings
(``profiles/*.yaml``), validated and all-or-nothing by default.

Why apart: an import is the only bulk write of invoices; everything it writes goes through the
same validation, so a bad file changes nothing.
"""
