"""Tests for tools.portal.access, mirroring its modules."""
