"""Tests for tools.demo.builder, mirroring its modules."""
