"""Versioned prompt files of the drafter (v1.md, ...); loaded by prompts.registry."""
