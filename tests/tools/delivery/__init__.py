"""Tests for tools.delivery.smtp, mirroring its modules."""
