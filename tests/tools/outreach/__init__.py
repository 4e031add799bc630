"""Tests for tools.outreach, mirroring its modules."""
