"""Tests for tools.cashapp, mirroring its modules."""
