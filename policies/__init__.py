"""Guardrails: policy sets as data (YAML) compiled into durable_rules rulesets.

``policies.engine.decide(action, facts)`` answers allow / defer / needs_approval / block with every
reason; ``policies.access.allowed(role, permission)`` is the persona access matrix. Pure: this
package reads only its own data files and imports nothing from memory, tools, agent or api.
See ``policies/README.md``.
"""
