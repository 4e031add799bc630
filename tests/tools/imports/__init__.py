"""Tests for tools.imports, mirroring its modules."""
