"""The co-pilot: pydantic-ai agents that write and read, never decide.

- ``agent.drafter.draft_outreach``: a grounded outreach draft, decided by the guardrails, stored.
- ``agent.service``: what the API calls (revise a draft, the inspector's recommendation, reply
  triage).
- ``agent.autopilot.run_autopilot``: drafts for every due cadence step, idempotently; the pass
  enqueues DBOS workflows (``agent.autopilot_flow``), which draft each chunk with
  ``agent.autopilot_batch`` (imports go one way: pass -> workflows -> batch drafting).
- ``agent.models.build_model``: ``PLIXO_MODEL`` to a pydantic-ai model (``offline`` by default).
"""
