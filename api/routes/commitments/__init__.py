"""Commitment routes: the API for promises-to-pay, payment plans, disputes and payments, and the
collector's and Legal's pages for them.
"""
