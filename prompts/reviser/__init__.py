"""Versioned prompt files of the reviser (v1.md, ...); loaded by prompts.registry."""
