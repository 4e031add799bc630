"""Setting up and running an organisation: people and roles, segments and cadences, policy
changes in human units, the sending domain (checks, warm-up, daily re-check) and data uploads.
"""
