"""Tests for tools.ledger, mirroring its modules."""
