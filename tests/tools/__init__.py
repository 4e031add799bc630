"""Tests for tools, one folder per domain; shared builders (factories, fixtures) sit here."""
