"""The deterministic demo organisation: what a real A/R book looks like on a given day, built in
named steps.

Why apart: the demo uses every domain and nothing uses it.
"""
