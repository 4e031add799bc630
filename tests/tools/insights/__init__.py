"""Tests for tools.insights, mirroring its modules."""
