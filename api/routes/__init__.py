"""The app's routers, one module per domain (review, commitments, disputes, messages, inbox,
insights, cash application, admin, portal, webhooks); ``api.app.ROUTER_MODULES`` lists them.
"""
