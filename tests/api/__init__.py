"""Tests for api: routes through the app, pages in Debian's Chromium, the CLI."""
