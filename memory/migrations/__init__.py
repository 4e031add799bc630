"""Alembic migrations of the ledger; ``regenerate`` rebuilds the initial revision from the models
(no deployed ledger has needed an upgrade path yet), and ``env`` runs them on SQLite or PostgreSQL.
"""
