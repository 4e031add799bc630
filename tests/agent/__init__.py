"""Tests for agent: the agents with pydantic-ai's TestModel and FunctionModel (model requests are
not allowed), Autopilot on DBOS.
"""
