"""``python -m api.cli.main``: the same command line as ``plixo``."""

from api.cli.main import main

main()
