"""Tests for tools.admin, mirroring its modules."""
