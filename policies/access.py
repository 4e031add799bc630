"""The persona access matrix (``access.yaml``): who may view, approve, edit and switch what.

The API guards every route with :func:`allowed`; the policy engine compiles its access rules (who
may change a policy, approve a plan, send a nudge) from the same table, so the two never disagree.
Role names are plain strings here because ``policies`` may not import the ledger.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from policies.types import PolicyError
from policies.yamlfile import line_for, read_yaml, read_yaml_file


class AccessMatrix(BaseModel):
    """Roles with ranks, permissions with a sentence each, and the grants between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: dict[str, int]
    permissions: dict[str, str]
    grants: dict[str, list[str]]

    @model_validator(mode="after")
    def _consistent(self) -> AccessMatrix:
        unknown_roles = sorted(set(self.grants) - set(self.roles))
        if unknown_roles:
            raise ValueError(f"grants name unknown roles {unknown_roles}; add them under roles")
        missing = sorted(set(self.roles) - set(self.grants))
        if missing:
            raise ValueError(f"roles {missing} have no grants entry; give each role a list")
        for role, perms in self.grants.items():
            unknown = sorted(set(perms) - set(self.permissions))
            if unknown:
                raise ValueError(f"role {role!r} is granted unknown permissions {unknown}")
            if len(set(perms)) != len(perms):
                raise ValueError(f"role {role!r} lists a permission twice")
        return self

    def allowed(self, role: str, permission: str) -> bool:
        if permission not in self.permissions:
            raise PolicyError(
                f"unknown permission {permission!r}; known: {', '.join(sorted(self.permissions))}"
            )
        return permission in self.grants.get(role, ())

    def rank(self, role: str) -> int:
        """The role's rank, or -1 for an unknown role (below everyone: fails every 'X or above')."""
        return self.roles.get(role, -1)

    def at_least(self, role: str, minimum: str) -> bool:
        if minimum not in self.roles:
            raise PolicyError(f"unknown role {minimum!r} in an 'or above' check")
        return role in self.roles and self.roles[role] >= self.roles[minimum]

    def roles_with(self, permission: str) -> list[str]:
        return [r for r in self.roles if self.allowed(r, permission)]


def parse_access(text: str, source: str) -> AccessMatrix:
    data, lines = read_yaml(text, source)
    return _validate(data, lines, source)


def load_access_file(path: Path) -> AccessMatrix:
    data, lines = read_yaml_file(path)
    return _validate(data, lines, str(path))


def _validate(data: object, lines: dict[tuple[str | int, ...], int], source: str) -> AccessMatrix:
    try:
        return AccessMatrix.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        line = line_for(lines, loc)
        where = f"line {line}" if line else "top level"
        raise PolicyError(f"{source}: {where} ({'.'.join(loc) or 'file'}): {first['msg']}") from exc


@lru_cache(maxsize=1)
def access_matrix() -> AccessMatrix:
    """The packaged matrix, parsed once."""
    text = resources.files("policies").joinpath("access.yaml").read_text(encoding="utf-8")
    return parse_access(text, "policies/access.yaml")


def roles() -> list[str]:
    """Every persona, most senior first."""
    m = access_matrix()
    return sorted(m.roles, key=lambda r: -m.roles[r])


def permissions() -> list[str]:
    return list(access_matrix().permissions)


def allowed(role: str, permission: str) -> bool:
    """True when ``role`` holds ``permission``; unknown roles hold nothing.

    An unknown permission raises :class:`PolicyError`: a typo in a route must fail loudly, not
    quietly deny (or allow) everyone.
    """
    return access_matrix().allowed(role, permission)


def permissions_for(role: str) -> frozenset[str]:
    return frozenset(access_matrix().grants.get(role, ()))


def rank(role: str) -> int:
    return access_matrix().rank(role)


def at_least(role: str, minimum: str) -> bool:
    """'Collector or above' checks: ``at_least(user_role, "Collector")``."""
    return access_matrix().at_least(role, minimum)


def roles_with(permission: str) -> list[str]:
    return access_matrix().roles_with(permission)
