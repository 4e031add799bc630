"""plixo's tests, mirroring the packages: real components (PostgreSQL, SMTP, IMAP, DNS, Stripe's
stand-in, Chromium) started by the tests, never mocks of them.
"""
