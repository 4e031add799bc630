"""Outreach guardrails (send_draft, send_nudge), each at its boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies.engine import PolicyEngine
from policies.policy_set import load_default, merge
from tests.policies.factories import NOW, check, draft, ids, iso, nudge


def at(local_iso: str, zone: str = "America/New_York") -> str:
    """An instant given as local wall time in ``zone`` (e.g. '2025-10-07T19:59')."""
    from zoneinfo import ZoneInfo

    return iso(datetime.fromisoformat(local_iso).replace(tzinfo=ZoneInfo(zone)))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the clean baseline ---------------------------------------------------------------------------


def test_clean_autopilot_draft_is_allowed_by_the_autopilot_rule() -> None:
    d = check("send_draft", draft())
    assert d.outcome == "allow"
    assert ids(d) == {"autopilot.allowed"}
    assert "Data-Ready 90 >= 80" in d.reasons[0].message


# --- Shadow Mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("org", "segment", "where"),
    [(True, False, "the organisation"), (False, True, "segment 'SMB'"), (True, True, "and")],
)
def test_shadow_mode_needs_collector_review_whatever_else_allows(
    org: bool, segment: bool, where: str
) -> None:
    d = check("send_draft", draft(org_shadow_mode=org, segment_shadow_mode=segment))
    assert d.outcome == "needs_approval"
    assert d.approver_role == "Collector"
    assert ids(d) == {"shadow.review_required"}
    assert where in d.reasons[0].message
    assert len(d.reasons) == 1  # one rule, fired once, even when both switches are on


def test_a_cadence_step_in_shadow_mode_needs_review_in_an_autopilot_segment() -> None:
    d = check("send_draft", draft(step_shadow_mode=True))
    assert d.outcome == "needs_approval" and ids(d) == {"shadow.review_required"}
    assert "Shadow Mode is on for this cadence step" in d.reasons[0].message
    reviewed = check("send_draft", draft(step_shadow_mode=True, approved_by_roles=["Collector"]))
    assert reviewed.outcome == "allow" and ids(reviewed) == {"review.approved"}
    assert check("send_draft", draft(step_shadow_mode=False)).outcome == "allow"


@pytest.mark.parametrize(
    ("roles", "outcome"),
    [
        (["Collector"], "allow"),
        (["Collections Manager"], "allow"),
        (["Admin"], "allow"),
        (["Legal"], "allow"),  # Legal ranks with the Collector (access.yaml)
        (["Sales"], "needs_approval"),
        (["CSM", "Viewer"], "needs_approval"),
        (["Payer"], "needs_approval"),  # unknown role: never a reviewer
        (["collector"], "needs_approval"),  # role names are exact
        ([], "needs_approval"),
    ],
)
def test_shadow_mode_review_must_come_from_collector_or_above(
    roles: list[str], outcome: str
) -> None:
    d = check("send_draft", draft(org_shadow_mode=True, approved_by_roles=roles))
    assert d.outcome == outcome
    if outcome == "allow":
        assert ids(d) == {"review.approved"}


def test_reviewer_minimum_role_is_data() -> None:
    strict = PolicyEngine(
        merge(load_default(), {"shadow_mode": {"reviewer_min_role": "Controller"}})
    )
    facts = draft(org_shadow_mode=True, approved_by_roles=["Collections Manager"])
    d = strict.decide("send_draft", facts)
    assert d.outcome == "needs_approval" and d.approver_role == "Controller"
    assert strict.decide(
        "send_draft", draft(org_shadow_mode=True, approved_by_roles=["Admin"])
    ).allowed


def test_a_reviewed_draft_still_obeys_every_other_guardrail() -> None:
    d = check(
        "send_draft",
        draft(org_shadow_mode=True, approved_by_roles=["Collector"], now=at("2025-10-07T21:00")),
    )
    assert d.outcome == "defer"
    assert ids(d) == {"review.approved", "quiet_hours.window"}


# --- Autopilot gating -----------------------------------------------------------------------------


def test_autopilot_needs_the_segment_enabled() -> None:
    d = check("send_draft", draft(autopilot_enabled=False))
    assert d.outcome == "needs_approval" and ids(d) == {"autopilot.not_enabled"}


@pytest.mark.parametrize(
    ("score", "outcome"), [(79, "needs_approval"), (80, "allow"), (100, "allow")]
)
def test_autopilot_data_ready_threshold_boundary(score: int, outcome: str) -> None:
    d = check("send_draft", draft(data_ready_score=score))
    assert d.outcome == outcome
    if outcome != "allow":
        assert ids(d) == {"autopilot.not_data_ready"}
        assert "79 is below 80" in d.reasons[0].message


def test_autopilot_needs_a_verified_domain() -> None:
    d = check("send_draft", draft(sending_domain_verified=False))
    assert d.outcome == "needs_approval" and ids(d) == {"autopilot.domain_unverified"}


@pytest.mark.parametrize("missing", ["data_ready_score", "sending_domain_verified"])
def test_autopilot_without_a_gating_fact_fails_closed(missing: str) -> None:
    facts = draft()
    del facts[missing]
    d = check("send_draft", facts)
    assert d.outcome == "block"
    assert "facts.missing" in ids(d)
    assert any(missing in r.message for r in d.reasons)


def test_gating_facts_are_not_needed_for_a_reviewed_draft() -> None:
    facts = draft(org_shadow_mode=True, approved_by_roles=["Collector"])
    del facts["data_ready_score"], facts["sending_domain_verified"]
    assert check("send_draft", facts).allowed


@pytest.mark.parametrize(
    ("switch", "rule"),
    [("maintenance", "sending.maintenance"), ("cron_paused", "sending.cron_paused")],
)
def test_maintenance_and_cron_pause_stop_everything(switch: str, rule: str) -> None:
    for facts in (draft(**{switch: True}), draft(**{switch: True}, approved_by_roles=["Admin"])):
        d = check("send_draft", facts)
        assert d.outcome == "defer" and rule in ids(d)
        assert d.not_before == NOW + timedelta(minutes=15)
    n = check("send_nudge", nudge(**{switch: True}))
    assert n.outcome == "defer" and rule in ids(n)


# --- quiet hours ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "outcome", "next_local"),
    [
        ("2025-10-07T07:59", "defer", "2025-10-07T08:00"),  # last minute of quiet hours
        ("2025-10-07T07:59:59.999999", "defer", "2025-10-07T08:00"),
        ("2025-10-07T08:00", "allow", None),  # first minute open
        ("2025-10-07T19:59:59", "allow", None),  # last open second
        ("2025-10-07T20:00", "defer", "2025-10-08T08:00"),  # first quiet minute
        ("2025-10-07T23:59", "defer", "2025-10-08T08:00"),
        ("2025-10-08T00:00", "defer", "2025-10-08T08:00"),  # across midnight
    ],
)
def test_quiet_hours_boundaries_in_contact_time(
    local: str, outcome: str, next_local: str | None
) -> None:
    d = check("send_draft", draft(now=at(local)))
    assert d.outcome == outcome
    if next_local:
        assert ids(d) == {"autopilot.allowed", "quiet_hours.window"}
        assert d.not_before == datetime.fromisoformat(at(next_local))


def test_quiet_hours_use_the_contacts_own_zone_across_midnight() -> None:
    # 02:30 UTC on Wednesday is 22:30 Tuesday in New York (quiet) but 11:30 Wednesday in Tokyo.
    now = "2025-10-08T02:30:00+00:00"
    ny = check("send_draft", draft(now=now))
    assert ny.outcome == "defer"
    assert ny.not_before == utc("2025-10-08T12:00")  # 08:00 EDT
    assert "22:30 America/New_York" in next(
        r.message for r in ny.reasons if r.rule_id == "quiet_hours.window"
    )
    tokyo = check("send_draft", draft(now=now, contact={"timezone": "Asia/Tokyo"}))
    assert tokyo.outcome == "allow"


def test_weekend_in_the_contacts_zone_not_the_servers() -> None:
    # Friday 23:30 UTC: Friday 19:30 in New York (open) but Saturday 08:30 in Tokyo (weekend).
    now = "2025-10-10T23:30:00+00:00"
    assert check("send_draft", draft(now=now)).outcome == "allow"
    tokyo = check("send_draft", draft(now=now, contact={"timezone": "Asia/Tokyo"}))
    assert tokyo.outcome == "defer" and ids(tokyo) == {"autopilot.allowed", "quiet_hours.weekend"}
    assert tokyo.not_before == datetime.fromisoformat(at("2025-10-13T08:00", "Asia/Tokyo"))


def test_friday_evening_defers_to_monday_morning() -> None:
    d = check("send_draft", draft(now=at("2025-10-10T20:00")))
    assert d.not_before == datetime.fromisoformat(at("2025-10-13T08:00"))


@pytest.mark.parametrize(
    ("local", "next_local"),
    [
        ("2025-12-25T10:00", "2025-12-26T08:00"),  # a holiday on a Thursday
        ("2025-12-31T20:00", "2026-01-02T08:00"),  # quiet evening, then New Year's Day
        ("2025-07-03T21:00", "2025-07-07T08:00"),  # 4 July is a Friday, then the weekend
    ],
)
def test_holidays_are_skipped(local: str, next_local: str) -> None:
    d = check("send_draft", draft(now=at(local), contact={"country": "US"}))
    assert d.outcome == "defer"
    assert d.not_before == datetime.fromisoformat(at(next_local))


def test_holiday_rule_names_the_day() -> None:
    d = check("send_draft", draft(now=at("2025-12-25T10:00"), contact={"country": "US"}))
    assert ids(d) == {"autopilot.allowed", "quiet_hours.holiday"}
    assert "2025-12-25 is a holiday for the contact (Christmas Day (US))" in d.reasons[0].message


def test_holidays_follow_the_contacts_country_and_subdivision() -> None:
    # Friday 2 January 2026: Berchtoldstag in Bern, a working day in New York and in Geneva.
    bern = {"timezone": "Europe/Zurich", "country": "CH", "subdivision": "BE"}
    d = check("send_draft", draft(now=at("2026-01-02T10:00", "Europe/Zurich"), contact=bern))
    assert ids(d) == {"autopilot.allowed", "quiet_hours.holiday"}
    assert "Berchtold" in d.reasons[0].message and "(CH-BE)" in d.reasons[0].message
    assert d.not_before == datetime.fromisoformat(at("2026-01-05T08:00", "Europe/Zurich"))
    geneva = {"timezone": "Europe/Zurich", "country": "CH-GE"}
    in_geneva = draft(now=at("2026-01-02T10:00", "Europe/Zurich"), contact=geneva)
    assert check("send_draft", in_geneva).outcome == "allow"
    new_york = draft(now=at("2026-01-02T10:00"), contact={"country": "US"})
    assert check("send_draft", new_york).outcome == "allow"
    # Thanksgiving closes the day for a US contact, not for a Swiss one.
    thanksgiving = at("2025-11-27T10:00")
    assert check("send_draft", draft(now=thanksgiving, contact={"country": "US"})).outcome == (
        "defer"
    )
    swiss_in_ny = {"country": "CH"}
    assert check("send_draft", draft(now=thanksgiving, contact=swiss_in_ny)).outcome == "allow"


def test_an_unknown_country_applies_no_national_calendar() -> None:
    for contact in ({}, {"country": "ZZ"}, {"country": ""}):
        d = check("send_draft", draft(now=at("2025-12-25T10:00"), contact=contact))
        assert d.outcome == "allow", contact


def test_the_policy_names_calendars_for_every_contact_and_extra_closures() -> None:
    eng = PolicyEngine(
        merge(
            load_default(),
            {"quiet_hours": {"holiday_calendars": ["GB-SCT"], "holidays": ["2025-10-08"]}},
        )
    )
    # 2 January is a bank holiday in Scotland: it applies to a US contact too (no "contact").
    d = eng.decide("send_draft", draft(now=at("2026-01-02T10:00"), contact={"country": "US"}))
    assert d.outcome == "defer" and "(GB-SCT)" in d.reasons[0].message
    listed = eng.decide("send_draft", draft(now=at("2025-10-08T10:00")))
    assert listed.outcome == "defer" and "listed holiday" in listed.reasons[0].message
    assert listed.not_before == datetime.fromisoformat(at("2025-10-09T08:00"))
    # Thanksgiving for a US contact is not closed: the policy no longer names "contact".
    us = {"country": "US"}
    assert eng.decide("send_draft", draft(now=at("2025-11-27T10:00"), contact=us)).outcome == (
        "allow"
    )


def test_dst_spring_forward_gap_opens_at_the_transition() -> None:
    # Quiet until 02:30, which does not exist in New York on 9 March 2025 (02:00 -> 03:00 EDT).
    eng = PolicyEngine(
        merge(
            load_default(), {"quiet_hours": {"start": "22:00", "end": "02:30", "weekend_days": []}}
        )
    )
    d = eng.decide("send_draft", draft(now="2025-03-09T06:00:00+00:00"))  # 01:00 EST
    assert d.outcome == "defer"
    assert d.not_before == utc("2025-03-09T07:00")  # the transition: 03:00 EDT


def test_dst_fall_back_repeated_hour_is_quiet_on_both_passes() -> None:
    eng = PolicyEngine(
        merge(
            load_default(), {"quiet_hours": {"start": "22:00", "end": "01:30", "weekend_days": []}}
        )
    )
    first = eng.decide("send_draft", draft(now="2025-11-02T05:10:00+00:00"))  # 01:10 EDT
    assert first.not_before == utc("2025-11-02T05:30")  # 01:30 EDT
    second = eng.decide("send_draft", draft(now="2025-11-02T06:10:00+00:00"))  # 01:10 EST
    assert second.not_before == utc("2025-11-02T06:30")  # 01:30 EST
    assert eng.decide("send_draft", draft(now="2025-11-02T05:45:00+00:00")).allowed  # 01:45 EDT


# --- cadence caps ---------------------------------------------------------------------------------


def touches(*ago: timedelta) -> list[str]:
    return [iso(NOW - a) for a in ago]


def test_the_nth_touch_in_the_window_is_allowed_the_next_is_deferred() -> None:
    two = touches(timedelta(days=6), timedelta(days=4))
    assert check("send_draft", draft(touches=two)).allowed  # this is the 3rd touch
    three = touches(timedelta(days=6), timedelta(days=4), timedelta(days=2))
    d = check("send_draft", draft(touches=three))
    assert d.outcome == "defer" and "cadence.max_touches" in ids(d)
    # The oldest touch leaves the 7-day window 6 days... 1 day from now.
    assert d.not_before == NOW - timedelta(days=6) + timedelta(days=7)


def test_a_touch_exactly_a_window_ago_is_outside_the_window() -> None:
    edge = touches(timedelta(days=7), timedelta(days=4), timedelta(days=2))
    assert check("send_draft", draft(touches=edge)).allowed
    inside = touches(timedelta(days=7) - timedelta(seconds=1), timedelta(days=4), timedelta(days=2))
    d = check("send_draft", draft(touches=inside))
    assert d.outcome == "defer" and ids(d) == {"autopilot.allowed", "cadence.max_touches"}
    assert d.not_before == NOW + timedelta(seconds=1)  # the oldest touch leaves the window


@pytest.mark.parametrize(
    ("ago", "outcome"),
    [
        (timedelta(hours=48), "allow"),
        (timedelta(hours=48) - timedelta(microseconds=1), "defer"),
        (timedelta(hours=47, minutes=59), "defer"),
        (timedelta(hours=-1), "defer"),  # a touch "in the future" (clock skew) counts
    ],
)
def test_minimum_gap_between_touches(ago: timedelta, outcome: str) -> None:
    d = check("send_draft", draft(touches=touches(ago)))
    assert d.outcome == outcome
    if outcome == "defer":
        assert ids(d) == {"autopilot.allowed", "cadence.min_gap"}
        assert d.not_before == NOW - ago + timedelta(hours=48)


# --- nudges ---------------------------------------------------------------------------------------


def test_sales_and_csm_nudges_are_allowed_and_the_ar_team_is_notified() -> None:
    for role in ("Sales", "CSM"):
        d = check("send_nudge", nudge(actor_role=role))
        assert d.allowed and d.notify == ["ar_team"]
        assert ids(d) == {"access.granted", "nudge.notify"}


def test_every_nudge_notifies_the_ar_team_even_when_refused() -> None:
    d = check("send_nudge", nudge(actor_role="Viewer"))
    assert d.outcome == "block" and "access.denied" in ids(d)
    assert d.notify == ["ar_team"]


def test_nudges_use_pre_approved_templates_only() -> None:
    d = check("send_nudge", nudge(template_approved=False))
    assert d.outcome == "block" and "nudge.template_not_approved" in ids(d)


@pytest.mark.parametrize(
    ("offset", "outcome"),
    [
        (timedelta(hours=24), "allow"),
        (timedelta(hours=24) - timedelta(seconds=1), "defer"),
        (timedelta(hours=2), "defer"),
        (-timedelta(hours=2), "defer"),  # scheduled a moment ago, may still be going out
        (-timedelta(hours=24), "allow"),
    ],
)
def test_nudge_never_overrides_autopilot_sequencing(offset: timedelta, outcome: str) -> None:
    scheduled = NOW + offset
    d = check("send_nudge", nudge(scheduled_autopilot_touches=[iso(scheduled)]))
    assert d.outcome == outcome
    if outcome == "defer":
        assert "nudge.autopilot_too_close" in ids(d)
        assert d.not_before == scheduled + timedelta(hours=24)
        assert d.notify == ["ar_team"]


def test_nudge_deferral_respects_quiet_hours_too() -> None:
    # Clear of Autopilot at 21:00 local, which is quiet: the next allowed moment is 08:00 next day.
    scheduled = datetime.fromisoformat(at("2025-10-06T21:00"))
    d = check(
        "send_nudge",
        nudge(now=at("2025-10-07T10:00"), scheduled_autopilot_touches=[iso(scheduled)]),
    )
    assert d.outcome == "defer"
    assert d.not_before == datetime.fromisoformat(at("2025-10-08T08:00"))


def test_nudges_respect_quiet_hours() -> None:
    d = check("send_nudge", nudge(now=at("2025-10-07T06:00")))
    assert d.outcome == "defer" and "quiet_hours.window" in ids(d)


# --- disputes, promises, consent ------------------------------------------------------------------


def test_disputed_invoices_are_never_dunned() -> None:
    invoices = [{"number": "INV-1", "disputed": False}, {"number": "INV-2", "disputed": True}]
    for action, facts in (
        ("send_draft", draft(invoices=invoices)),
        ("send_nudge", nudge(invoices=invoices)),
    ):
        d = check(action, facts)
        assert d.outcome == "block"
        reason = next(r for r in d.reasons if r.rule_id == "dispute.no_dunning")
        assert "INV-2" in reason.message and "dispute workflow" in reason.message


def promise(days: int, status: str = "open", grace: int | None = None, inv: str = "INV-1") -> dict:
    out: dict = {
        "promised_date": (NOW.date() + timedelta(days=days)).isoformat(),
        "status": status,
        "invoice_numbers": [inv],
    }
    if grace is not None:
        out["grace_days"] = grace
    return out


@pytest.mark.parametrize(
    ("days", "outcome", "opens"),
    [
        (5, "defer", "2025-10-16T08:00"),  # paused through 15 Oct, resumes Thursday morning
        (0, "defer", "2025-10-13T08:00"),  # resumes Saturday 11 Oct: the weekend waits too
        (-3, "defer", "2025-10-08T08:00"),  # today is the last grace day (inclusive)
        (-4, "allow", None),
    ],
)
def test_open_promise_pauses_chasing_until_date_plus_grace(
    days: int, outcome: str, opens: str | None
) -> None:
    d = check("send_draft", draft(promises=[promise(days)]))
    assert d.outcome == outcome
    if opens:
        assert ids(d) == {"autopilot.allowed", "promise.open"}
        resume = NOW.date() + timedelta(days=days + 3 + 1)
        assert d.reasons[0].not_before == datetime.fromisoformat(at(f"{resume}T00:00"))
        assert d.not_before == datetime.fromisoformat(at(opens))
    else:  # past its grace: the promise counts as missed, the cadence resumes
        assert ids(d) == {"autopilot.allowed", "promise.missed"}


def test_a_promise_carries_its_own_grace() -> None:
    assert check("send_draft", draft(promises=[promise(-1, grace=0)])).allowed
    assert check("send_draft", draft(promises=[promise(-1, grace=1)])).outcome == "defer"


def test_missed_promise_resumes_the_cadence_and_says_so() -> None:
    d = check("send_draft", draft(promises=[promise(-1, status="missed")]))
    assert d.allowed and ids(d) == {"autopilot.allowed", "promise.missed"}
    missed = next(r for r in d.reasons if r.rule_id == "promise.missed")
    assert "2025-10-06 was missed: the cadence resumes" in missed.message


def test_kept_or_unrelated_promises_do_not_pause() -> None:
    assert check("send_draft", draft(promises=[promise(3, status="kept")])).allowed
    assert check("send_draft", draft(promises=[promise(3, inv="INV-9")])).allowed


# --- promise reminders (about_promise) ----------------------------------------------------------


def reminder_about(listed: dict) -> dict:
    """``about_promise`` as the agent sends it (``agent.drafter.reminded_promise``): no grace."""
    return {k: v for k, v in listed.items() if k != "grace_days"}


@pytest.mark.parametrize("days", [5, 0, -3])  # due later, due today, last grace day (inclusive)
def test_a_reminder_about_its_open_promise_is_not_paused_by_it(days: int) -> None:
    listed = promise(days)
    d = check("send_draft", draft(promises=[listed], about_promise=reminder_about(listed)))
    assert d.outcome == "allow" and ids(d) == {"autopilot.allowed"}


def test_a_reminder_may_state_the_promises_own_grace() -> None:
    listed = promise(1, grace=2)
    about = {**reminder_about(listed), "grace_days": 2}
    assert check("send_draft", draft(promises=[listed], about_promise=about)).allowed
    about["grace_days"] = 3  # not that promise's grace: not that promise
    d = check("send_draft", draft(promises=[listed], about_promise=about))
    assert d.outcome == "block" and "promise.reminder_not_open" in ids(d)


def test_the_other_guardrails_still_apply_to_a_reminder() -> None:
    listed = promise(2)
    about = reminder_about(listed)
    shadow = check(
        "send_draft", draft(promises=[listed], about_promise=about, org_shadow_mode=True)
    )
    assert shadow.outcome == "needs_approval" and ids(shadow) == {"shadow.review_required"}
    quiet = check(
        "send_draft", draft(promises=[listed], about_promise=about, now=at("2025-10-07T21:00"))
    )
    assert quiet.outcome == "defer" and "quiet_hours.window" in ids(quiet)
    disputed = check(
        "send_draft",
        draft(
            promises=[listed],
            about_promise=about,
            invoices=[{"number": "INV-1", "disputed": True}],
        ),
    )
    assert disputed.outcome == "block" and "dispute.no_dunning" in ids(disputed)


def test_another_open_promise_on_the_invoices_still_pauses_a_reminder() -> None:
    listed, other = promise(2), promise(6)
    d = check("send_draft", draft(promises=[listed, other], about_promise=reminder_about(listed)))
    assert d.outcome == "defer" and "promise.open" in ids(d)
    paused = next(r for r in d.reasons if r.rule_id == "promise.open")
    assert "due 2025-10-13" in paused.message and "2025-10-09" not in paused.message


@pytest.mark.parametrize(
    ("listed", "about", "why"),
    [
        (promise(-4), promise(-4), "past its grace"),
        (promise(-1, status="missed"), promise(-1), "missed"),
        (promise(2, status="kept"), promise(2), "kept"),
        (promise(2), promise(3), "another date"),
        (promise(2, inv="INV-9"), promise(2, inv="INV-9"), "not on the draft's invoices"),
        (promise(2), promise(2, inv="INV-9"), "other invoices"),
        (promise(2), promise(2, status="missed"), "not said to be open"),
    ],
)
def test_a_reminder_about_a_promise_that_is_not_open_here_is_blocked(
    listed: dict, about: dict, why: str
) -> None:
    d = check("send_draft", draft(promises=[listed], about_promise=about))
    assert d.outcome == "block", why
    reason = next(r for r in d.reasons if r.rule_id == "promise.reminder_not_open")
    assert "Fact about_promise" in reason.message and "fail closed" in reason.message
    assert about["promised_date"] in reason.message


def test_a_reminder_about_an_unlisted_promise_is_blocked() -> None:
    d = check("send_draft", draft(promises=[], about_promise=promise(2)))
    assert d.outcome == "block" and "promise.reminder_not_open" in ids(d)


def test_a_draft_that_is_not_a_reminder_is_still_paused() -> None:
    d = check("send_draft", draft(promises=[promise(2)]))
    assert d.outcome == "defer" and ids(d) == {"autopilot.allowed", "promise.open"}
    assert check("send_draft", draft(promises=[promise(2)], about_promise=None)).outcome == "defer"


@pytest.mark.parametrize(
    ("contact", "rule"),
    [
        ({"opted_out": True}, "contact.opted_out"),
        ({"bounced": True}, "contact.bounced"),
        ({"consent": False}, "contact.no_consent"),
    ],
)
def test_contacts_without_permission_are_not_contacted(contact: dict, rule: str) -> None:
    for action, facts in (
        ("send_draft", draft(contact=contact)),
        ("send_nudge", nudge(contact=contact)),
    ):
        d = check(action, facts)
        assert d.outcome == "block" and rule in ids(d)
        # Even a human approval does not override consent.
    d = check(
        "send_draft", draft(contact=contact, approved_by_roles=["Admin"], org_shadow_mode=True)
    )
    assert d.outcome == "block"


# --- content against the ledger -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "Failing payment we will take LEGAL\n action.",
        "We may refer this to a collection agency.",
        "Our attorney is copied.",
        "We will sue.",
        "Lawsuits are not our style.",  # a plural is the same threat (policies/textscan.py)
        "Our l\u200begal-team is copied.",
    ],
)
def test_legal_threat_language_needs_legal(body: str) -> None:
    d = check("send_draft", draft(content={"body": body}))
    assert d.outcome == "needs_approval" and d.approver_role == "Legal"
    assert "content.legal_threat" in ids(d)
    approved = check("send_draft", draft(content={"body": body}, approved_by_roles=["Legal"]))
    assert approved.allowed


@pytest.mark.parametrize(
    "body", ["We will pursue this kindly.", "With courtesy, the issue is open.", "Issue"]
)
def test_threat_phrases_match_whole_words_only(body: str) -> None:
    assert check("send_draft", draft(content={"body": body})).allowed


def test_legal_and_shadow_mode_both_ask() -> None:
    d = check("send_draft", draft(org_shadow_mode=True, content={"body": "we will sue"}))
    assert d.approver_roles == ["Collector", "Legal"]  # equal rank: by name
    assert d.approver_role == "Collector"
    both = check(
        "send_draft",
        draft(org_shadow_mode=True, content={"body": "we will sue"}, approved_by_roles=["Legal"]),
    )
    assert both.allowed  # Legal's approval is also a Shadow Mode review


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ({"invoice_numbers": []}, "content.missing_invoice_reference"),
        ({"pay_link": None}, "content.missing_pay_link"),
        ({"pay_link": ""}, "content.missing_pay_link"),
        ({"pay_link": "   "}, "content.missing_pay_link"),
        ({"pay_link": "https://evil.example.com/pay"}, "content.pay_link_mismatch"),
        ({"invoice_numbers": ["INV-1", "INV-9"]}, "content.invoice_mismatch"),
        ({"amounts": [{"amount_minor": 124001, "currency": "USD"}]}, "content.amount_mismatch"),
        ({"amounts": [{"amount_minor": 124000, "currency": "EUR"}]}, "content.amount_mismatch"),
        ({"dates": ["2025-09-16"]}, "content.date_mismatch"),
    ],
)
def test_content_must_match_the_ledger(content: dict, rule: str) -> None:
    d = check("send_draft", draft(content=content))
    assert d.outcome == "block" and ids(d) == {"autopilot.allowed", rule}


def test_content_mismatch_messages_name_the_offending_values() -> None:
    d = check(
        "send_draft", draft(content={"amounts": [{"amount_minor": 124001, "currency": "USD"}]})
    )
    assert "$1,240.01" in d.reasons[0].message
    d = check("send_draft", draft(content={"invoice_numbers": ["INV-9"]}))
    assert "INV-9" in d.reasons[0].message


def test_a_human_approval_never_overrides_the_ledger_check() -> None:
    d = check(
        "send_draft",
        draft(org_shadow_mode=True, approved_by_roles=["Admin"], content={"dates": ["2030-01-01"]}),
    )
    assert d.outcome == "block"


def test_every_reason_fired_is_kept_with_precedence() -> None:
    d = check(
        "send_draft",
        draft(
            now=at("2025-10-07T21:00"),
            org_shadow_mode=True,
            contact={"opted_out": True},
            touches=touches(timedelta(hours=1)),
        ),
    )
    assert d.outcome == "block"
    assert ids(d) == {
        "contact.opted_out",
        "shadow.review_required",
        "quiet_hours.window",
        "cadence.min_gap",
    }
    assert [r.outcome.value for r in d.reasons] == ["block", "needs_approval", "defer", "defer"]
