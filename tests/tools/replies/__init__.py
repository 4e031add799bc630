"""Tests for tools.replies, mirroring its modules."""
