"""The eval suites (pydantic-evals): development cases and a held-out set the offline model has
never seen, scored for facts, calls to action, policy compliance, tone and injection resistance;
``plixo eval run`` gates every model or prompt change on the held-out set.
"""
