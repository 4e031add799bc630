"""Tests for tools.inbox, mirroring its modules."""
