"""Fixtures for the agent tests: a small ledger, offline settings and the agent's deps."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from agent.deps import AgentDeps
from memory.config import Settings
from tests.agent.factories import AS_OF, NOW, Ledger, settings_for, small_ledger


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    return settings_for(data_dir=str(tmp_path))


@pytest.fixture
def ledger(session: Session) -> Ledger:
    return small_ledger(session)


@pytest.fixture
def deps(session: Session, ledger: Ledger, settings: Settings) -> AgentDeps:
    return AgentDeps(session=session, org_id=ledger.org.id, settings=settings, as_of=AS_OF, now=NOW)
