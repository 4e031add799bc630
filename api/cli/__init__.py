"""The ``plixo`` command line (typer + rich): one module per command group, registered in ``main``.

Why a package: each command group is a thin door over the agent and tools, kept apart so a
newcomer finds ``plixo cash`` in ``api/cli/cash.py``.
"""
