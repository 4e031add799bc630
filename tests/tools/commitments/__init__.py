"""Tests for tools.commitments, mirroring its modules."""
