"""The payer mini-portal's security and data: tokens, access checks and the access log.

Why apart: the portal is the only door for people who are not users; its checks live in one place.
"""
