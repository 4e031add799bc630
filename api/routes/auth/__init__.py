"""Log-in routes: server-side sessions for the pages, expiring bearer tokens for scripts."""
