"""The outside world's doors: the FastAPI app (JSON API, review panel, mini-portal, webhooks)
and the ``plixo`` command line. Routes parse, authenticate and render; what they do is a tool or
agent call, and refusals are ``memory.errors.PlixoError`` answered by the app's one handler.
"""

# Every process that serves plixo (the app, the CLI, the workers) starts by importing this package:
# the tool domains' hooks are connected here, once, before any of them runs (tools/wiring.py).
import tools.wiring  # noqa: F401
