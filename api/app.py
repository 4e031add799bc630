"""The FastAPI application: JSON API (documented OpenAPI), the review panel pages, webhooks, portal."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.middleware.sessions import SessionMiddleware

from api.routes import auth, commitments, insights, portal, review, slack, stripe_webhook
from memory.config import Settings, get_settings
from memory.db import make_engine, session_factory

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

SESSION_MAX_AGE_S = 8 * 3600  # a working day; an expired session logs in again


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app for ``engine`` (default: the configured ledger)."""
    settings = settings or get_settings()
    engine = engine or make_engine(settings.resolved_database_url)
    app = FastAPI(
        title="plixo",
        version="0.1.0",
        description="Accounts-receivable co-pilot: drafts by the agent, decisions by the guardrails.",
    )
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.settings = settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key.get_secret_value(),
        session_cookie="plixo_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (auth, review, commitments, insights, portal, stripe_webhook, slack):
        app.include_router(module.router)
    return app
