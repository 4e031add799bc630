"""Regenerate the single pre-1.0 initial migration from the models.

plixo has had no release yet, so the schema history is squashed into ``0001_initial``. Run
``python -m memory.migrations.regenerate`` after changing ``memory/models.py``; once released,
new revisions are added with ``alembic revision --autogenerate`` instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from memory.db import make_engine
from memory.migrate import MIGRATIONS_DIR, alembic_config


def main() -> None:
    versions = MIGRATIONS_DIR / "versions"
    for old in versions.glob("0001_initial*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'empty.db'}")
        cfg = alembic_config(engine)
        command.revision(cfg, message="initial ledger", autogenerate=True, rev_id="0001_initial")
        engine.dispose()
    print("wrote", next(versions.glob("0001_initial*.py")))


if __name__ == "__main__":
    main()
