"""Hooks: a lower tool domain's call into a higher one, turned around.

Why: the tool domains are layered (``.importlinter``), so a lower domain may not import a higher
one; yet a few of its operations have a consequence that lives upstairs (an escalated dispute
notifies people through the inbox, an approved draft goes into the outbox). The lower domain
declares a ``Hook`` and calls through it; ``tools.wiring``, the composition root that every entry
point imports (the app, the CLI and the workers through ``api/__init__.py``, the tests through
their ``conftest.py``), fills it with the higher domain's function. A hook nobody filled raises
``HookNotWired`` when it is used: a side effect is never skipped silently.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")


class HookNotWired(RuntimeError):
    """A lower domain called a hook that no composition root filled (``tools.wiring`` was not
    imported by this process's entry point)."""


_ALL: dict[str, Hook[Any]] = {}


class Hook(Generic[T]):
    """One named place where a lower domain calls a function it may not import.

    ``T`` is the function's (or provider's) type, usually a ``Protocol``, so mypy checks that what
    ``tools.wiring`` registers fits what the lower domain calls.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._impl: T | None = None
        _ALL[name] = self

    def register(self, impl: T) -> T:
        """Fill the hook (once; registering the same provider again changes nothing)."""
        if self._impl is not None and self._impl is not impl:
            raise RuntimeError(f"Hook {self.name} is already wired to {self._impl!r}.")
        self._impl = impl
        return impl

    def get(self) -> T:
        """The registered provider; raises ``HookNotWired`` when there is none."""
        if self._impl is None:
            raise HookNotWired(
                f"Hook {self.name} has no handler: this process never imported tools.wiring "
                "(api/__init__.py and tests/conftest.py do)."
            )
        return self._impl

    @property
    def wired(self) -> bool:
        return self._impl is not None


def unwired() -> list[str]:
    """Names of the declared hooks nobody filled yet (empty once ``tools.wiring`` ran)."""
    return sorted(name for name, hook in _ALL.items() if not hook.wired)


def all_hooks() -> dict[str, Hook[Any]]:
    """Every hook declared so far, by name (for the wiring's own check and its tests)."""
    return dict(_ALL)
