"""Tests for tools.kit, mirroring its modules."""
