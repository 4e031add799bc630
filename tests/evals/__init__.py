"""Tests for evals: the suites, the gate, and that held-out cases never appear in code."""
