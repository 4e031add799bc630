"""Versioned prompt templates: ``prompts/<agent>/v<N>.md`` (+ the drafter's message templates).

Each draft stores the version id (e.g. ``drafter/v1``) so a change of wording is traceable and the
evals can compare two versions on the same cases. Load them through ``prompts.registry``.
"""
