"""Tests for policies: every guardrail at its boundaries, and the engine against an independent
Python reference.
"""
