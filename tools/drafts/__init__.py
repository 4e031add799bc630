"""The draft: storing what the co-pilot wrote, every status change in one place (``lifecycle``),
what drafting costs, batch approval, and how often people approve drafts unchanged (Shadow Mode
agreement).

Why one domain: a draft's status has one owner, so the review panel, Autopilot and delivery cannot
disagree about it.
"""
