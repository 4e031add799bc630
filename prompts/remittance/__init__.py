"""Versioned prompt files of the remittance reader (v1.md, ...); loaded by prompts.registry."""
