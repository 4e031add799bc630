"""The engine itself: failing closed, leaving no state, serializing callers, explaining itself."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import durable.engine
import durable_rules_engine
import pytest

import policies.engine as engine_module
from policies import conditions as c
from policies.engine import PolicyEngine, decide, engine_for
from policies.facts import EXAMPLES, FACT_MODELS, SendDraftFacts
from policies.policy_set import load_default, merge
from policies.rules import Ctx, Rule, derive
from policies.types import ActionType, Decision, Outcome
from tests.policies.factories import check, credit, draft, ids, nudge, plan

# --- failing closed -------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["send_email", "", "SEND_DRAFT", {"type": "dance"}, {}])
def test_unknown_action_types_are_blocked(action: Any) -> None:
    d = decide(action, draft())
    assert d.outcome == "block" and ids(d) == {"action.unknown"}
    assert "known: send_draft" in d.reasons[0].message


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        (("touches",), "facts.missing"),
        (("contact", "timezone"), "facts.missing"),
        (("contact", "opted_out"), "facts.missing"),
        (("content", "pay_link"), "facts.missing"),
        (("org_shadow_mode",), "facts.missing"),
        (("promises",), "facts.missing"),
    ],
)
def test_missing_facts_block_and_name_the_fact(path: tuple[str, ...], rule: str) -> None:
    facts = draft()
    parent = facts
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    d = decide("send_draft", facts)
    assert d.outcome == "block" and ids(d) == {rule}
    assert repr(".".join(path)) in d.reasons[0].message


@pytest.mark.parametrize(
    ("action", "facts", "where"),
    [
        ("offer_plan", plan(total_minor="5000"), "total_minor"),
        ("offer_plan", plan(total_minor=5000.0), "total_minor"),  # money is never a float
        ("offer_plan", plan(total_minor=0), "total_minor"),
        ("offer_plan", plan(currency="usd"), "currency"),
        ("grant_credit", credit(amount_minor=True), "amount_minor"),
        ("send_draft", draft(maintenance="false"), "maintenance"),
        ("send_draft", draft(maintenance=0), "maintenance"),
        ("send_draft", draft(now="2025-10-07T15:00:00"), "now"),  # naive: no time zone
        ("send_draft", draft(now="yesterday"), "now"),
        ("send_draft", draft(touches=["2025-10-01T10:00:00"]), "touches.0"),
        ("send_draft", draft(contact={"timezone": "Mars/Olympus_Mons"}), "contact.timezone"),
        ("send_draft", draft(data_ready_score=101), "data_ready_score"),
        ("send_draft", draft(channel="pigeon"), "channel"),
        ("send_nudge", nudge(scheduled_autopilot_touches=None), "scheduled_autopilot_touches"),
    ],
)
def test_wrong_types_block_and_name_the_fact(action: str, facts: dict, where: str) -> None:
    d = decide(action, facts)
    assert d.outcome == "block" and ids(d) == {"facts.invalid"}
    assert repr(where) in d.reasons[0].message


def test_unknown_time_zone_says_what_to_use() -> None:
    d = decide("send_draft", draft(contact={"timezone": "Mars/Olympus_Mons"}))
    assert "IANA name" in d.reasons[0].message


def test_unknown_facts_are_refused_not_ignored() -> None:
    facts = draft(contact={"opted_out_email": True})  # a misspelling must not read as "opted in"
    d = decide("send_draft", facts)
    assert d.outcome == "block" and ids(d) == {"facts.unknown"}
    assert "contact.opted_out_email" in d.reasons[0].message


def test_several_problems_are_all_reported() -> None:
    facts = draft()
    del facts["touches"], facts["promises"]
    d = decide("send_draft", facts)
    assert sorted(r.message.split("'")[1] for r in d.reasons) == ["promises", "touches"]


@pytest.mark.parametrize("facts", [None, [1, 2], "facts", 42])
def test_facts_that_are_not_an_object_are_blocked(facts: Any) -> None:
    d = decide("send_draft", facts)
    assert d.outcome == "block" and ids(d) == {"facts.invalid"}


def test_typed_facts_are_accepted_and_a_wrong_model_is_not() -> None:
    typed = SendDraftFacts.model_validate(draft())
    assert decide("send_draft", typed).allowed
    wrong = decide("offer_plan", typed)
    assert (
        wrong.outcome == "block"
        and "must be a JSON object or OfferPlanFacts" in wrong.reasons[0].message
    )


def test_an_internal_error_blocks_instead_of_allowing(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = PolicyEngine()
    rules = eng._rulesets[ActionType.SEND_DRAFT].by_name

    def boom(ctx: Ctx) -> str:
        raise RuntimeError("message template broke")

    broken = Rule(**{**rules["autopilot.allowed"].__dict__, "message": boom})
    monkeypatch.setitem(rules, "autopilot.allowed", broken)
    d = eng.decide("send_draft", draft())
    assert d.outcome == "block" and ids(d) == {"engine.error"}
    assert "message template broke" in d.reasons[0].message
    assert eng._rulesets[ActionType.SEND_DRAFT].facts() == []


def test_nothing_is_allowed_without_a_granting_rule() -> None:
    eng = PolicyEngine()
    info = Rule("x", "promise.missed", Outcome.ALLOW, {"k": 1}, "info", lambda c: "info only")
    d = eng._aggregate(ActionType.SEND_DRAFT, Ctx(None, eng.policy_set), [info])
    assert d.outcome == "block" and ids(d) == {"promise.missed", "default.deny"}


def test_a_closed_engine_blocks() -> None:
    eng = PolicyEngine()
    eng.close()
    d = eng.decide("send_draft", draft())
    assert d.outcome == "block" and ids(d) == {"engine.error"}


# --- durable_rules mechanics ----------------------------------------------------------------------


def test_no_fact_is_left_in_the_engine_after_a_decision() -> None:
    eng = PolicyEngine()
    for action in ActionType:
        compiled = eng._rulesets[action]
        for _ in range(3):  # a lingering fact would be "already observed" the second time
            eng.decide(action, EXAMPLES[action])
            assert compiled.facts() == []


def test_identical_decisions_in_a_row_are_independent() -> None:
    eng = PolicyEngine()
    first = eng.decide("send_draft", draft(org_shadow_mode=True))
    second = eng.decide("send_draft", draft(org_shadow_mode=True))
    third = eng.decide("send_draft", draft())
    assert first == second and first.outcome == "needs_approval"
    assert third.allowed and "shadow.review_required" not in third.rule_ids


def test_the_session_is_reset_when_a_decision_fails_half_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eng = PolicyEngine()
    compiled = eng._rulesets[ActionType.SEND_DRAFT]
    real = durable_rules_engine.complete_and_start_action
    calls = {"n": 0}

    def flaky(h: int, state: int) -> Any:  # the engine fails after the first rule's action
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine hiccup")
        return real(h, state)

    monkeypatch.setattr(durable_rules_engine, "complete_and_start_action", flaky)
    d = eng.decide("send_draft", draft(org_shadow_mode=True, contact={"opted_out": True}))
    assert d.outcome == "block" and ids(d) == {"engine.error"}
    assert calls["n"] == 1 and compiled.facts() == []
    with pytest.raises(durable_rules_engine.error):  # the whole session was deleted
        compiled.ruleset.get_state(engine_module._SID)
    monkeypatch.undo()
    assert eng.decide("send_draft", draft()).rule_ids == ["autopilot.allowed"]  # nothing leaked


class _JumpingClock:
    """durable_rules' own clock, jumping 11 s at each of the first ``jumps`` reads after the
    first: an action it started then looks 10 s old (a starved process, a clock jump)."""

    def __init__(self, jumps: int) -> None:
        self.t = 1_000_000.0
        self.reads = 0
        self.jumps = jumps

    def __call__(self) -> float:
        self.reads += 1
        if 1 < self.reads <= self.jumps + 1:
            self.t += 11
        return self.t


def test_a_decision_whose_actions_durable_rules_dropped_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eng = PolicyEngine()
    facts = draft(org_shadow_mode=True, contact={"opted_out": True})
    monkeypatch.setattr(durable.engine, "_unix_now", _JumpingClock(jumps=10_000))
    d = eng.decide("send_draft", facts)
    assert d.outcome == "block" and ids(d) == {"engine.error"}
    assert "dropped a rule's action" in d.reasons[0].message
    assert eng._rulesets[ActionType.SEND_DRAFT].facts() == []
    monkeypatch.undo()
    assert eng.decide("send_draft", facts).rule_ids == [
        "contact.opted_out",
        "shadow.review_required",
    ]


def test_a_dropped_action_once_is_decided_again_from_a_clean_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eng = PolicyEngine()
    facts = draft(org_shadow_mode=True, contact={"opted_out": True})
    clock = _JumpingClock(jumps=1)
    monkeypatch.setattr(durable.engine, "_unix_now", clock)
    d = eng.decide("send_draft", facts)
    assert clock.reads > 2  # the first attempt was cut short, the second ran
    assert d.rule_ids == ["contact.opted_out", "shadow.review_required"]


def test_closing_an_engine_deletes_its_sessions_before_its_rulesets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eng = PolicyEngine()
    eng.decide("send_draft", draft())
    handles = {c.ruleset._handle for c in eng._rulesets.values()}
    calls: list[tuple[str, int]] = []
    for name in ("delete_state", "delete_ruleset"):
        real = getattr(durable_rules_engine, name)

        def call(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append((_name, args[0]))
            return _real(*args)

        monkeypatch.setattr(durable_rules_engine, name, call)
    eng.close()
    # delete_ruleset alone leaves a session's buffers allocated (measured: 2.5 MB per engine)
    for handle in handles:
        assert calls.index(("delete_state", handle)) < calls.index(("delete_ruleset", handle))
    assert eng._rulesets == {}


def test_every_rule_is_a_durable_rules_action_that_records_its_own_name() -> None:
    """What fired comes from the rules' own callbacks, not from parsing the engine's messages:
    every rule of the set is in the ruleset durable_rules holds, under its name."""
    eng = PolicyEngine()
    for action, compiled in eng._rulesets.items():
        assert set(compiled.ruleset.get_definition()) == set(compiled.by_name), action
    d = eng.decide("send_draft", draft(org_shadow_mode=True, contact={"opted_out": True}))
    assert d.rule_ids == ["contact.opted_out", "shadow.review_required"]
    assert d.outcome == "block"


def test_thresholds_are_compiled_into_the_durable_rules_conditions() -> None:
    eng = PolicyEngine(merge(load_default(), {"cadence": {"max_touches": 9}}))
    rules = eng._rulesets[ActionType.SEND_DRAFT].by_name
    assert rules["cadence.max_touches"].definition() == {
        "all": [{"m": {"$gte": {"touches_in_window": 9}}}]
    }
    window = json.dumps(rules["quiet_hours.window"].definition())
    assert "1200" in window and "480" in window  # 20:00 and 08:00 as minutes of the day
    limits = eng._rulesets[ActionType.OFFER_PLAN].by_name
    assert {"$gt": {"total": 1_000_000}} in limits["plan.above_role_limit[Collector]"].cond["$and"]


def test_a_rule_with_two_true_branches_fires_once() -> None:
    d = check("send_draft", draft(org_shadow_mode=True, segment_shadow_mode=True))
    assert d.rule_ids == ["shadow.review_required"]


def test_branches_that_all_hold_run_the_rule_once_in_durable_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exclusive branches (``conditions.any_flag``): one action per rule that fires, not one per
    branch that holds (each action is a JSON round trip of the whole fact)."""
    real = durable_rules_engine.complete_and_start_action
    calls = {"n": 0}

    def counted(h: int, state: int) -> Any:
        calls["n"] += 1
        return real(h, state)

    monkeypatch.setattr(durable_rules_engine, "complete_and_start_action", counted)
    every_shadow = {"org_shadow_mode": True, "segment_shadow_mode": True, "step_shadow_mode": True}
    missed = {"status": "missed", "promised_date": "2025-09-01", "invoice_numbers": ["INV-1"]}
    open_past = missed | {"status": "open"}  # open, but past its grace
    d = PolicyEngine().decide("send_draft", draft(**every_shadow, promises=[missed, open_past]))
    assert sorted(d.rule_ids) == ["promise.missed", "shadow.review_required"]
    assert calls["n"] == 2


def test_flags_are_in_the_payload_only_when_they_hold() -> None:
    eng = PolicyEngine()
    facts = SendDraftFacts.model_validate(draft(contact={"bounced": True}))
    payload = derive(ActionType.SEND_DRAFT, facts, eng.book, eng._scanner).d["payload"]
    assert payload["bounced"] is True and payload["consent"] is True
    assert "opted_out" not in payload and "org_shadow_mode" not in payload
    # three states, not a flag: known False stays (unknown would block Autopilot)
    assert payload["sending_domain_verified"] is True
    assert not [k for k, v in payload.items() if v is False]


def test_a_condition_made_only_of_absences_is_anchored_to_the_payload() -> None:
    """durable_rules runs its session state through the rules after every action: a rule that
    asked only for absent flags would match that state, and again after its own action."""
    lonely = c.lacks("template_approved")
    assert not c.anchored(lonely) and c.anchor(lonely) == {"$and": [c.ALWAYS, lonely]}
    assert c.anchored(c.all_of(c.gt("disputed", 0), c.lacks("dispute_correspondence")))
    assert not c.anchored(c.any_of(c.holds("a"), c.lacks("b")))
    eng = PolicyEngine()
    for action, compiled in eng._rulesets.items():
        for name, rule in compiled.by_name.items():
            assert c.anchored(rule.definition()["all"][0]["m"]), (action, name)
    d = eng.decide(
        "send_nudge", nudge(template_approved=False, contact={"consent": False}, actor_role="CSM")
    )
    expected = {"nudge.template_not_approved", "contact.no_consent", "access.granted"}
    assert ids(d) == expected | {"nudge.notify"}


def test_engines_are_cached_by_policy_content() -> None:
    a = engine_for(merge(load_default(), {"cadence": {"max_touches": 4}}))
    b = engine_for(merge(load_default(), {"cadence": {"max_touches": 4}}))
    c = engine_for(merge(load_default(), {"cadence": {"max_touches": 5}}))
    assert a is b and a is not c
    assert engine_for() is engine_for(load_default())


def test_decisions_record_the_policy_digest() -> None:
    ps = merge(load_default(), {"cadence": {"max_touches": 4}})
    assert decide("send_draft", draft(), ps).policy_digest == ps.digest != load_default().digest


def test_decision_serializes_for_the_ledger() -> None:
    d = check("send_nudge", nudge(now="2025-10-08T01:00:00+00:00"))  # 21:00 in New York
    data = d.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["outcome"] == "defer"
    assert data["not_before"] in ("2025-10-08T12:00:00Z", "2025-10-08T12:00:00+00:00")
    assert data["notify"] == ["ar_team"]
    assert Decision.model_validate(data) == d


# --- concurrency ----------------------------------------------------------------------------------


def _workload() -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(7)
    items: list[tuple[str, dict[str, Any]]] = []
    for i in range(240):
        kind = i % 4
        if kind == 0:
            items.append(
                (
                    "send_draft",
                    draft(org_shadow_mode=rng.random() < 0.5, data_ready_score=rng.randint(70, 90)),
                )
            )
        elif kind == 1:
            hour = rng.randint(0, 23)
            items.append(("send_nudge", nudge(now=f"2025-10-07T{hour:02d}:00:00+00:00")))
        elif kind == 2:
            items.append(("offer_plan", plan(total_minor=rng.randint(1, 8_000_000))))
        else:
            items.append(("grant_credit", credit(amount_minor=rng.randint(1, 900_000))))
    return items


class _SerializationProbe:
    """Wraps the durable_rules module: counts callers inside it at once and widens race windows."""

    def __init__(self, real: Any, dry: bool = False) -> None:
        self._real = real
        self._dry = dry
        self.inside = 0
        self.max_inside = 0
        self.calls = 0
        self._guard = threading.Lock()
        self.error = real.error

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._real, name)

        def call(*args: Any) -> Any:
            with self._guard:
                self.inside += 1
                self.calls += 1
                self.max_inside = max(self.max_inside, self.inside)
            try:
                time.sleep(0)  # yield the GIL: without the engine lock another thread gets in here
                if self._dry:  # stand-in answers: "no rule matched", no state to delete
                    return (1, 0) if name in ("assert_fact", "retract_fact") else None
                return target(*args)
            finally:
                with self._guard:
                    self.inside -= 1

        return call


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SerializationProbe]:
    p = _SerializationProbe(durable_rules_engine)
    monkeypatch.setattr(durable.engine, "durable_rules_engine", p)
    yield p


def test_concurrent_callers_are_serialized_and_get_sequential_answers(
    probe: _SerializationProbe,
) -> None:
    eng = PolicyEngine()
    work = _workload()
    expected = [eng.decide(a, f).as_dict() for a, f in work]
    results: dict[int, list[dict[str, Any]]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            start.wait()
            order = list(range(len(work)))
            random.Random(n).shuffle(order)
            out: list[Any] = [None] * len(work)
            for i in order:
                out[i] = eng.decide(*work[i]).as_dict()
            results[n] = out
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert probe.calls > 8 * len(work) * 3
    assert probe.max_inside == 1, "two threads were inside durable_rules at once"
    for out in results.values():
        assert out == expected


def test_without_the_lock_the_probe_sees_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves the probe can detect a race, so the test above is not vacuous.

    The probe runs dry here: durable_rules itself, entered by two threads at once, crashes the
    process with a segmentation fault (observed while writing this test).
    """
    eng = PolicyEngine()
    probe = _SerializationProbe(durable_rules_engine, dry=True)
    monkeypatch.setattr(durable.engine, "durable_rules_engine", probe)

    class NoLock:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(engine_module, "ENGINE_LOCK", NoLock())
    work = _workload()[:60]

    def worker() -> None:
        for action, facts in work:
            eng.decide(action, facts)  # the dry probe never raises; decide fails closed

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert probe.max_inside > 1


# --- explaining -----------------------------------------------------------------------------------


def test_explain_lists_every_rule_as_a_sentence() -> None:
    sentences = PolicyEngine().explain()
    assert set(sentences) == set(ActionType)
    plans: dict[str, list[str]] = {}
    for rid, _, text in sentences[ActionType.OFFER_PLAN]:
        plans.setdefault(rid, []).append(text)
    # one threshold per currency the policy sets limits in, each in its own money
    assert plans["plan.above_controller_threshold"] == [
        "Plans above $50,000 always need the Controller.",
        "Plans above €50,000 always need the Controller.",
        "Plans above £40,000 always need the Controller.",
    ]
    outreach = {rid for rid, _, _ in sentences[ActionType.SEND_DRAFT]}
    assert {
        "shadow.review_required",
        "quiet_hours.window",
        "cadence.max_touches",
        "content.legal_threat",
    } <= outreach
    for lines in sentences.values():
        for _, _, text in lines:
            assert text.endswith(".") and "{" not in text


def test_every_example_decides_and_every_fact_model_has_one() -> None:
    assert set(EXAMPLES) == set(FACT_MODELS) == set(ActionType)
    for action, facts in EXAMPLES.items():
        FACT_MODELS[action].model_validate(facts)
        assert decide(action, facts).reasons
