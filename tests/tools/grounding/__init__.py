"""Tests for tools.grounding, mirroring its modules."""
