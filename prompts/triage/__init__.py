"""Versioned prompt files of the triage (v1.md, ...); loaded by prompts.registry."""
