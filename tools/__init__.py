"""Typed operations over the ledger, one module (or subpackage) per domain.

Why a layer of its own: every write a person or the agent can cause goes through a function here
that checks permission where the write happens (``tools.kit.authz.guarded``), audits it and leaves
nothing half-written; the agent sees only a read-only or proposal-only subset. Tools use
``memory`` and consult ``policies``; they never import the agent or the API.
"""
