"""Tests for tools.payments.posting, mirroring its modules."""
