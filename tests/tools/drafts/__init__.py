"""Tests for tools.drafts.service, mirroring its modules."""
