"""Outreach: which cadence steps and follow-ups are due (Autopilot's selection), consolidated
messages per customer, Sales and CSM nudges (in the panel and on Slack), and the sending modes
(Shadow Mode, Autopilot, maintenance, the cron pause).

Why apart: deciding *what* to say to whom and *when* is separate from delivering it.
"""
