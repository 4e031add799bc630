"""What reaches people: the in-app notifications inbox, the approvals inbox for Controllers and
Legal, and the DBOS schedule that notifies of breached SLAs and missed promises.

Why apart: many domains raise notifications; one home decides how people receive them.
"""
