"""Alembic revisions of the ledger, in order; each upgrade has its downgrade. Why a package:
Alembic and the tests import the revisions by module.
"""
