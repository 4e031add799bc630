"""Webhooks from outside services: Stripe's signed events and Slack's interactivity.

Why together: both are verified by a signature before anything is read, and both always answer.
"""
