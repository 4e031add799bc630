"""Tests for tools.grounding.check, mirroring its modules."""
