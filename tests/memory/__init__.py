"""Tests for memory: the ledger models, migrations, money, the clock and recall."""
