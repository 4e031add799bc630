"""One error model: every domain refusal is a ``PlixoError`` with its status and message."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from memory.errors import PlixoError


def test_status_message_and_reasons_travel_together() -> None:
    err = PlixoError("Pick a date in the future.", http_status=422)
    assert (err.http_status, err.status_code, str(err)) == (422, 422, "Pick a date in the future.")
    assert err.body() == {"detail": "Pick a date in the future."}

    class Refused(PlixoError):
        http_status = 403

    refused = Refused("A Controller must approve this.")
    refused.reasons = [{"rule_id": "plan.cap", "message": "over the cap"}]
    assert refused.http_status == 403
    assert refused.body()["reasons"][0]["rule_id"] == "plan.cap"


def _domain_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for pkg_name in ("tools", "agent"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == info.name and issubclass(cls, BaseException):
                    found.append(cls)
    return found


def test_every_error_that_names_an_http_status_is_a_plixo_error() -> None:
    """A refusal with a status of its own must go through the app's one handler."""
    with_status = [
        c for c in _domain_exceptions() if "http_status" in vars(c) or "status_code" in vars(c)
    ]
    assert with_status, "the domains define their refusals' statuses"
    stray = [f"{c.__module__}.{c.__name__}" for c in with_status if not issubclass(c, PlixoError)]
    assert stray == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("tools.drafts.service", "DraftError"),
        ("tools.commitments.promises", "CommitmentError"),
        ("tools.kit.authz", "PermissionDenied"),
        ("tools.delivery.outbox", "OutboxError"),
        ("tools.portal.access", "PortalDenied"),
        ("tools.admin.people", "PeopleError"),
        ("tools.drafts.lifecycle", "IllegalTransition"),
    ],
)
def test_the_domain_families_share_the_base(path: str, name: str) -> None:
    assert issubclass(getattr(importlib.import_module(path), name), PlixoError)


@pytest.mark.parametrize(
    ("path", "name", "status"),
    [
        ("tools.drafts.batch", "BatchError", 422),
        ("tools.outreach.nudges", "NudgeError", 422),
        ("tools.outreach.nudges", "NudgeNotFound", 404),
        ("tools.outreach.sending_modes", "ModeRefused", 403),
        ("tools.outreach.sending_modes", "SegmentNotFound", 404),
        ("tools.admin.sessions", "PasswordRefused", 422),
        ("tools.insights.renewal", "RenewalInputError", 422),
        ("tools.ledger.statement", "StatementUnavailable", 503),
        ("tools.replies.messages", "MessageNotFound", 404),
        ("tools.cashapp.parsers", "CashFileError", 400),
    ],
)
def test_errors_the_routes_no_longer_convert_carry_their_status(
    path: str, name: str, status: int
) -> None:
    """The routes stopped catching these one by one: the app's handler answers with the status
    the route used to give, and the message unchanged."""
    cls = getattr(importlib.import_module(path), name)
    assert issubclass(cls, PlixoError)
    err = cls("Say what to do instead.")
    assert (err.http_status, err.body()["detail"]) == (status, "Say what to do instead.")


def test_a_refused_sending_mode_keeps_its_reasons_and_figures() -> None:
    from tools.outreach.sending_modes import ModeRefused

    bare = ModeRefused("Viewer may not switch sending modes.")
    assert bare.body() == {"detail": "Viewer may not switch sending modes.", "reasons": []}
    figures = {"decided": 40, "unchanged": 31}
    gated = ModeRefused("Too few drafts agreed.", [{"rule_id": "shadow.min"}], figures)
    assert gated.body()["shadow_agreement"] == figures
    assert gated.body()["reasons"] == [{"rule_id": "shadow.min"}]


def test_the_app_has_one_handler_for_them() -> None:
    from api.app import create_app

    app = create_app()
    domain = [
        exc
        for exc in app.exception_handlers
        if isinstance(exc, type) and issubclass(exc, PlixoError)
    ]
    assert domain == [PlixoError]
