"""Review routes: the Shadow Mode queue, drafts, revisions, approvals and batches, as JSON and as
the panel's pages over the same tools.
"""
