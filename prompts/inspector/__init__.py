"""Versioned prompt files of the inspector (v1.md, ...); loaded by prompts.registry."""
