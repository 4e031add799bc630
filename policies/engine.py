"""The guardrail engine: a policy set compiled into durable_rules rulesets, one per action type.

``decide(action, facts)`` validates the typed facts, derives a small flat payload, *asserts* it as a
fact (events would be consumed by the first matching rule; a fact lets every guardrail fire),
collects every rule that fired, retracts the fact, and folds the reasons into one :class:`Decision`
(block > needs_approval > defer > allow, all reasons kept).

Each action type's rules are one ``durable.engine.Ruleset`` (durable_rules' public Python API,
the class ``durable.lang`` builds on), and every rule's action is a Python callback that records the
rule's name: the engine tells us what fired, nothing is parsed out of its messages. We use rulesets
without a ``durable.engine.Host``: a Host starts timer threads that dispatch actions on its
rulesets outside any lock of ours. Rulesets are global in the process and not thread-safe, so one
process-wide lock serializes every call into the engine. The only call below the public API is
the release of a closed engine's rulesets (``durable_rules_engine.delete_ruleset``): the Python
API keeps every ruleset for the life of the process, about 4 MB per engine (measured), and
engines come and go with organisations' policy changes.

Fail closed, always: an unknown action type, facts that are missing, unknown or of the wrong type, a
missing fact a rule needs, or an internal error all produce ``block`` with a reason saying what to
fix.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import durable_rules_engine
from durable.engine import MessageNotHandledException, Ruleset
from pydantic import BaseModel, ValidationError

from policies.facts import FACT_MODELS, SendNudgeFacts
from policies.policy_set import PolicySet, load_default
from policies.rules import Ctx, Rule, RuleBook, ThreatScanner, build, derive
from policies.timewin import next_allowed
from policies.types import OUTREACH_ACTIONS, PRECEDENCE, ActionType, Decision, Outcome, Reason

log = logging.getLogger(__name__)

# One lock for every engine: durable_rules keeps its rulesets in process-global tables.
ENGINE_LOCK = threading.RLock()
_SEQ = itertools.count(1)
_SID = "0"
_MAX_FACT_REASONS = 20
_ACTION_TYPES = {a.value: a for a in ActionType}
#: A fact is retracted by its identity (``sid`` and ``id``): durable_rules need not be sent the
#: whole payload again, which would cost one more encoding of it per decision.
_IDENTITY = {"sid": _SID, "id": _SID}


class _ActionDropped(RuntimeError):
    """durable_rules stopped running a decision's actions before the last one.

    Its ``Closure`` treats an action that started more than 10 s of wall-clock time ago as
    finished and silently stops the chain (a starved process, a clock jump): the rules that
    fired after it would be missing, and a missing blocking rule would allow what it blocks.
    """


class _CompiledRules:
    """One action type's rules as a durable_rules ruleset whose actions record what fired."""

    def __init__(self, name: str, rules: list[Rule]) -> None:
        self.by_name = {r.name: r for r in rules}
        self._fired: dict[str, None] = {}
        self._done: list[BaseException | None] = []
        definition = {r.name: {**r.definition(), "run": self._recorder(r.name)} for r in rules}
        self.ruleset = Ruleset(name, None, definition)

    def _recorder(self, name: str) -> Any:
        def record(c: Any) -> None:
            # durable_rules expands an ``$or`` into one path per branch, so a rule whose
            # branches both hold fires twice: a rule counts once per decision (the keys of a
            # dict, in the order they fired).
            self._fired[name] = None

        return record

    def _completed(self, error: BaseException | None, _state: Any) -> None:
        """durable_rules' callback once a decision's actions are done (``error``: one failed)."""
        self._done.append(error)

    def fire(self, payload: dict[str, Any]) -> list[Rule]:
        """Assert ``payload`` as a fact, run every rule it satisfies, retract the fact.

        The fact is retracted, not the session deleted: deleting frees the session's large
        buffers and the next decision allocates them again (measured four times slower). An
        empty session holds no facts and does not grow. If anything goes wrong half-way the
        whole session is deleted, so no queued action can leak into the next decision. A
        decision whose actions durable_rules gave up on (see ``_ActionDropped``) is made once
        more from a clean session, then fails closed.
        """
        payload["sid"] = _SID
        payload["id"] = _SID
        with ENGINE_LOCK:
            for attempt in (1, 2):
                self._fired = {}
                clean = False
                try:
                    self._assert_and_run(payload)
                    try:  # noqa: SIM105 - no context manager object per decision
                        self.ruleset.retract_fact(_IDENTITY)
                    except MessageNotHandledException:  # it matched nothing
                        pass
                    clean = True
                except _ActionDropped:
                    if attempt == 2:
                        raise
                finally:
                    if not clean:
                        self.forget()
                if clean:
                    break
            return [self.by_name[name] for name in self._fired]

    def _assert_and_run(self, payload: dict[str, Any]) -> None:
        try:
            state = self.ruleset.assert_fact(payload)
        except MessageNotHandledException:
            return  # no rule's condition holds
        if not state:
            return
        done: list[BaseException | None] = []
        self._done = done
        self.ruleset.do_actions(state, self._completed)
        failures = [error for error in done if error is not None]
        if failures:
            raise failures[0]
        if not done:
            raise _ActionDropped(
                "durable_rules dropped a rule's action (it counts an action that started more "
                "than 10 s ago as finished): the decision is incomplete"
            )

    def facts(self) -> list[Any]:
        """The facts durable_rules holds for the session (empty between decisions)."""
        with ENGINE_LOCK:
            try:
                return list(self.ruleset.get_facts(_SID))
            except Exception:  # no session at all
                return []

    def forget(self) -> None:
        """Delete the session (facts and pending actions), if there is one."""
        with ENGINE_LOCK, contextlib.suppress(Exception):
            self.ruleset.delete_state(_SID)

    def release(self) -> None:
        """Free the ruleset: the session first (alone, ``delete_ruleset`` leaves the session's
        buffers allocated, ~2.5 MB measured), then the ruleset (see the module docstring)."""
        self.forget()
        with ENGINE_LOCK, contextlib.suppress(Exception):
            durable_rules_engine.delete_ruleset(self.ruleset._handle)  # noqa: SLF001


def _blocked(action: str, reasons: list[Reason], digest: str) -> Decision:
    return Decision(action=action, outcome=Outcome.BLOCK, reasons=reasons, policy_digest=digest)


def _fact_reasons(action: ActionType, exc: ValidationError) -> list[Reason]:
    reasons = []
    for err in exc.errors()[:_MAX_FACT_REASONS]:
        where = ".".join(str(p) for p in err["loc"]) or "facts"
        if err["type"] == "missing":
            rule_id, msg = "facts.missing", f"Missing fact {where!r} for {action.value}"
        elif err["type"] == "extra_forbidden":
            rule_id, msg = "facts.unknown", f"Unknown fact {where!r} (not a {action.value} fact)"
        else:
            text = err["msg"].removeprefix("Value error, ")
            rule_id, msg = "facts.invalid", f"Fact {where!r} is invalid: {text}"
        reasons.append(
            Reason(rule_id=rule_id, outcome=Outcome.BLOCK, message=msg + " (fail closed)")
        )
    return reasons


def action_type_of(action: Any) -> str:
    """The action type string from an ActionType, a string, or a mapping with a ``type`` key."""
    if isinstance(action, Mapping):
        return str(action.get("type", ""))
    return str(action.value if isinstance(action, ActionType) else action)


class PolicyEngine:
    """One policy set compiled into durable_rules rulesets (one per action type)."""

    def __init__(self, policy_set: PolicySet | None = None) -> None:
        self.policy_set = policy_set if policy_set is not None else load_default()
        self.book: RuleBook = build(self.policy_set)
        self.digest = self.policy_set.digest
        self._scanner = ThreatScanner(self.policy_set.content)
        self._prefix = f"plixo{next(_SEQ)}_{self.digest}"
        self._rulesets: dict[ActionType, _CompiledRules] = {}
        with ENGINE_LOCK:
            try:
                for action, rules in self.book.by_action.items():
                    name = f"{self._prefix}_{action.value}"
                    self._rulesets[action] = _CompiledRules(name, rules)
            except BaseException:
                self.close()
                raise

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release this engine's sessions and rulesets from durable_rules' process-global tables."""
        with ENGINE_LOCK:
            rulesets, self._rulesets = self._rulesets, {}
            for compiled in rulesets.values():
                compiled.release()

    def __del__(self) -> None:
        try:  # noqa: SIM105 - contextlib may already be gone at interpreter shutdown
            self.close()
        except Exception:  # pragma: no cover
            pass

    # --- deciding ----------------------------------------------------------------------------

    def decide(self, action: ActionType | str | Mapping[str, Any], facts: Any) -> Decision:
        """The decision for ``action`` given ``facts`` (a mapping or the action's fact model)."""
        raw_type = action if type(action) is str else action_type_of(action)
        atype = _ACTION_TYPES.get(raw_type)
        if atype is None:
            known = ", ".join(a.value for a in ActionType)
            return _blocked(
                raw_type,
                [
                    Reason(
                        rule_id="action.unknown",
                        outcome=Outcome.BLOCK,
                        message=f"Unknown action type {raw_type!r} (known: {known}): blocked",
                    )
                ],
                self.digest,
            )
        model = FACT_MODELS[atype]
        if type(facts) is dict or isinstance(facts, model):
            typed: Any = facts
        elif isinstance(facts, BaseModel) or not isinstance(facts, Mapping):
            return _blocked(
                atype.value,
                [
                    Reason(
                        rule_id="facts.invalid",
                        outcome=Outcome.BLOCK,
                        message=(
                            f"Facts for {atype.value} must be a JSON object or "
                            f"{model.__name__}, got {type(facts).__name__} (fail closed)"
                        ),
                    )
                ],
                self.digest,
            )
        else:
            typed = facts
        if not isinstance(typed, model):
            try:
                typed = model.model_validate(typed)
            except ValidationError as exc:
                return _blocked(atype.value, _fact_reasons(atype, exc), self.digest)
        try:
            return self._decide_typed(atype, typed)
        except Exception as exc:  # fail closed on any defect, but say so loudly
            log.exception("policy engine error on %s", atype.value)
            return _blocked(
                atype.value,
                [
                    Reason(
                        rule_id="engine.error",
                        outcome=Outcome.BLOCK,
                        message=f"Internal error while evaluating {atype.value} "
                        f"({type(exc).__name__}: {exc}): blocked (fail closed)",
                    )
                ],
                self.digest,
            )

    def _decide_typed(self, atype: ActionType, facts: Any) -> Decision:
        if not self._rulesets:
            raise RuntimeError("this PolicyEngine was closed")
        ctx = derive(atype, facts, self.book, self._scanner)
        fired = self._rulesets[atype].fire(ctx.d["payload"])
        return self._aggregate(atype, ctx, fired)

    def _aggregate(self, atype: ActionType, ctx: Ctx, fired: list[Rule]) -> Decision:
        reasons: list[Reason] = []
        granted = False
        notify: set[str] = set()
        outcome, rank = Outcome.ALLOW, 0  # the strongest outcome (Outcome.strongest), in one pass
        for rule in fired:
            if rule.grants:
                granted = True
            if rule.notify:
                notify.update(rule.notify)
            if PRECEDENCE[rule.outcome] > rank:
                outcome, rank = rule.outcome, PRECEDENCE[rule.outcome]
            reasons.append(
                Reason(
                    rule_id=rule.rule_id,
                    outcome=rule.outcome,
                    message=rule.message(ctx),
                    not_before=rule.not_before(ctx) if rule.not_before else None,
                    approver_role=rule.approver,
                )
            )
        if outcome is Outcome.ALLOW and not granted:
            reasons.append(
                Reason(
                    rule_id="default.deny",
                    outcome=Outcome.BLOCK,
                    message=f"No rule allows this {atype.value}: blocked (nothing happens without "
                    "a rule allowing it)",
                )
            )
            outcome = Outcome.BLOCK
        if len(reasons) > 1:
            reasons.sort(key=lambda r: (-PRECEDENCE[r.outcome], r.rule_id, r.message))

        not_before: datetime | None = None
        if outcome is Outcome.DEFER:
            not_before = self._combined_not_before(atype, ctx, reasons)
        approver_roles: list[str] = []
        if outcome is Outcome.NEEDS_APPROVAL:
            matrix = self.policy_set.access
            wanted = {r.approver_role for r in reasons if r.approver_role and r.outcome is outcome}
            approver_roles = sorted(wanted, key=lambda role: (-matrix.rank(role), role))
        return Decision(
            action=atype.value,
            outcome=outcome,
            reasons=reasons,
            not_before=not_before,
            approver_role=approver_roles[0] if approver_roles else None,
            approver_roles=approver_roles,
            notify=sorted(notify),
            policy_digest=self.digest,
        )

    def _combined_not_before(self, atype: ActionType, ctx: Ctx, reasons: list[Reason]) -> datetime:
        """The first moment every deferring rule allows (and, for outreach, quiet hours too)."""
        bounds = [r.not_before for r in reasons if r.outcome is Outcome.DEFER and r.not_before]
        # Pure: "now" is a fact the caller gave (outreach), never read from a clock here.
        now = ctx.d.get("now") or getattr(ctx.f, "now", None)
        lower = max([t for t in (now, *bounds) if t is not None])
        if atype in OUTREACH_ACTIONS:
            scheduled: list[datetime] = []
            gap = timedelta(0)
            if isinstance(ctx.f, SendNudgeFacts):
                scheduled = ctx.d["scheduled"]
                gap = timedelta(hours=self.policy_set.nudges.min_gap_to_autopilot_hours)
            calendar, tz = ctx.d["cal"], ctx.d["tz"]
            if lower == now and not (scheduled and gap):  # quiet hours alone: already computed
                lower = ctx.once("next_open", lambda: calendar.next_open(now, tz))
            else:
                lower = next_allowed(lower, calendar, tz, scheduled, gap)
        return lower.astimezone(UTC)

    # --- explaining --------------------------------------------------------------------------

    def explain(self) -> dict[ActionType, list[tuple[str, Outcome, str]]]:
        """Every rule as ``(rule_ids, outcome, sentence)``, by action type, one line per sentence.

        Rules sharing a sentence (a role's "within limit" and "above limit" pair) are one line,
        with their ids joined and the stronger outcome shown.
        """
        out: dict[ActionType, list[tuple[str, Outcome, str]]] = {}
        for action, rules in self.book.by_action.items():
            lines: dict[str, tuple[list[str], Outcome]] = {}
            for rule in rules:
                ids, outcome = lines.setdefault(rule.explain, ([], rule.outcome))
                if rule.rule_id not in ids:
                    ids.append(rule.rule_id)
                if rule.outcome.precedence > outcome.precedence:
                    lines[rule.explain] = (ids, rule.outcome)
            out[action] = [(", ".join(ids), o, text) for text, (ids, o) in lines.items()]
        return out


# --- module-level convenience ---------------------------------------------------------------------

_CACHE_SIZE = 16
_engines: OrderedDict[str, PolicyEngine] = OrderedDict()
_engines_lock = threading.Lock()


def engine_for(policy_set: PolicySet | None = None) -> PolicyEngine:
    """A compiled engine for ``policy_set`` (default set when None), cached by content digest.

    Evicted engines are dropped, and their rulesets deleted once nobody holds them any more.
    """
    ps = policy_set if policy_set is not None else load_default()
    with _engines_lock:
        engine = _engines.get(ps.digest)
        if engine is not None:
            _engines.move_to_end(ps.digest)
            return engine
    engine = PolicyEngine(ps)
    with _engines_lock:
        existing = _engines.get(ps.digest)
        if existing is not None:
            return existing
        _engines[ps.digest] = engine
        while len(_engines) > _CACHE_SIZE:
            _engines.popitem(last=False)
    return engine


def decide(
    action: ActionType | str | Mapping[str, Any], facts: Any, policy_set: PolicySet | None = None
) -> Decision:
    """Decide with the default policy set, or with ``policy_set`` (an organisation's merged set)."""
    return engine_for(policy_set).decide(action, facts)
