"""Loading and filling the versioned prompts.

Layout: ``prompts/<agent>/v<N>.md`` holds an agent's instructions (the system prompt); the drafter
also has ``prompts/drafter/v<N>.<lang>.yaml`` with its message templates (greetings, sign-offs,
one template per cadence step, and sentences to mention promises, plans and partial payments).

Both a real model and the offline model use the same files: the real model gets the template of
its step as the skeleton to write from; the offline model fills it in verbatim. The version id
(``drafter/v1``) is stored on every draft.

Placeholders are ``{name}``; filling a template with a name it does not know raises
``PromptError`` rather than sending a message with a literal ``{balance}`` in it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

_VERSION_RE = re.compile(r"^v(\d+)\.md$")
_TEMPLATES_RE = re.compile(r"^(v\d+)\.([a-z]{2,3})\.yaml$")
#: libyaml's parser when PyYAML has it (its wheels do): a process reads every language's templates
#: before its first drafts, and the pure-Python parser took most of that time.
_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PromptError(LookupError):
    """A prompt, template or placeholder that does not exist; the message says which."""


@dataclass(frozen=True)
class Prompt:
    agent: str
    version: str
    text: str

    @property
    def version_id(self) -> str:
        return f"{self.agent}/{self.version}"

    def render(self, **values: Any) -> str:
        return fill(self.text, values)


def _files(agent: str) -> list[str]:
    try:
        folder = resources.files("prompts").joinpath(agent)
        return [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise PromptError(f"no prompts for agent {agent!r}") from exc


def versions(agent: str) -> list[str]:
    """The versions of an agent's prompt, oldest first (``["v1", "v2"]``)."""
    found = sorted(
        (int(m.group(1)), f"v{m.group(1)}") for n in _files(agent) if (m := _VERSION_RE.match(n))
    )
    return [v for _, v in found]


@lru_cache(maxsize=16)
def latest(agent: str) -> str:
    """The newest version of an agent's prompt (``"v2"``)."""
    available = versions(agent)
    if not available:
        raise PromptError(f"no prompt versions for agent {agent!r}")
    return available[-1]


@lru_cache(maxsize=64)
def load(agent: str, version: str | None = None) -> Prompt:
    """An agent's prompt; the newest version unless ``version`` (``"v1"``) is given."""
    available = versions(agent)
    if not available:
        raise PromptError(f"no prompt versions for agent {agent!r}")
    chosen = version or available[-1]
    if chosen not in available:
        raise PromptError(f"{agent} has no prompt {chosen!r} (have: {', '.join(available)})")
    text = resources.files("prompts").joinpath(agent, f"{chosen}.md").read_text(encoding="utf-8")
    return Prompt(agent=agent, version=chosen, text=text)


@dataclass(frozen=True)
class TemplateBook:
    """The drafter's message templates in one language."""

    language: str
    greetings: Mapping[str, str]
    signoffs: Mapping[str, str]
    tone_greeting: Mapping[str, str]
    templates: Mapping[str, Mapping[str, Any]]
    mentions: Mapping[str, str]
    labels: Mapping[str, str]

    def template(self, name: str) -> Mapping[str, Any]:
        try:
            return self.templates[name]
        except KeyError:
            raise PromptError(f"no drafter template {name!r} in {self.language}") from None


def template_books() -> list[tuple[str, str]]:
    """Every ``(language, version)`` the drafter has templates for, in name order."""
    return sorted(
        (m.group(2), m.group(1)) for n in _files("drafter") if (m := _TEMPLATES_RE.match(n))
    )


@lru_cache(maxsize=32)
def templates(language: str, version: str = "v1") -> TemplateBook:
    """The drafter's templates for ``language`` (``PromptError`` when there are none)."""
    name = f"{version}.{language}.yaml"
    try:
        raw = resources.files("prompts").joinpath("drafter", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"the drafter has no templates in language {language!r}") from None
    data = yaml.load(raw, Loader=_YamlLoader)  # noqa: S506 - a safe loader
    return TemplateBook(
        language=language,
        greetings=data["greetings"],
        signoffs=data["signoffs"],
        tone_greeting=data["tone_greeting"],
        templates=data["templates"],
        mentions=data["mentions"],
        labels=data.get("labels", {}),
    )


def template_languages(version: str = "v1") -> list[str]:
    """Languages the drafter has templates for in ``version``."""
    out = []
    for n in _files("drafter"):
        parts = n.split(".")
        if len(parts) == 3 and parts[0] == version and parts[2] == "yaml":
            out.append(parts[1])
    return sorted(out)


_FALLBACKS: tuple[tuple[str, str], ...] = (
    ("promise_remind", "generic_reminder"),  # never "promise_broken" for a promise still open
    ("statement", "account_statement"),
    ("final", "final_notice"),
    ("firm", "firm_reminder"),
    ("second", "second_reminder"),
    ("courtesy", "pre_due_courtesy"),
    ("pre_due", "pre_due_courtesy"),
    ("today", "due_today"),
    ("call", "account_review_call"),
    ("promise", "promise_broken"),
    ("install", "installment_missed"),
    ("csm", "csm_nudge"),
    ("sales", "sales_nudge"),
    ("nudge", "sales_nudge"),
    ("friendly", "friendly_reminder"),
    ("remind", "friendly_reminder"),
)


def resolve_template_name(name: str, available: Collection[str]) -> str:
    """The drafter template a cadence step's template name is written from, of ``available``.

    Why here: an organisation may invent step names ("final_demand"); the drafter and the
    consolidation (which must know whether a step is a final notice) read them the same way.
    """
    if name in available:
        return name
    low = name.lower()
    for needle, target in _FALLBACKS:
        if needle in low and target in available:
            return target
    return "generic_reminder"


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def fill(text: str, values: Mapping[str, Any]) -> str:
    """``text`` with every ``{name}`` replaced; an unknown name raises ``PromptError``."""
    missing = placeholders(text) - set(values)
    if missing:
        raise PromptError(f"no value for placeholder(s) {', '.join(sorted(missing))}")
    return text.format_map(dict(values))
