"""``--set name=value`` options of ``unipipe deploy``: parsed once, checked against the target."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


class InvalidDeploy(ValueError):
    """Bad input (unknown option, missing value, unknown target): exit code 2, nothing changed."""


class DeployFailed(RuntimeError):
    """The service refused or could not be reached while applying the plan: exit code 1."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass
class Options:
    """Target options. Reading one marks it used; :meth:`check` rejects names no target reads."""

    values: dict[str, str]
    target: str
    known: frozenset[str] = frozenset()
    _prefixes: tuple[str, ...] = ()
    used: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, pairs: Iterable[str], *, target: str, known: Iterable[str],
              prefixes: Iterable[str] = ()) -> Options:
        values: dict[str, str] = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            name = name.strip()
            if not sep or not name:
                raise InvalidDeploy(f"--set {pair!r} must look like name=value")
            if name in values:
                raise InvalidDeploy(f"--set {name} given twice")
            values[name] = value
        opts = cls(values=values, target=target, known=frozenset(known), _prefixes=tuple(prefixes))
        unknown = [n for n in values if n not in opts.known and not n.startswith(opts._prefixes)]
        if unknown:
            allowed = ", ".join(sorted(opts.known) + [p + "NAME" for p in opts._prefixes])
            raise InvalidDeploy(f"--to {target} does not take --set {', '.join(unknown)} "
                                f"(options: {allowed})")
        return opts

    def get(self, name: str, default: str | None = None) -> str | None:
        assert name in self.known, name
        value = self.values.get(name)
        return default if value is None or value == "" else value

    def require(self, name: str, why: str = "") -> str:
        value = self.get(name)
        if value is None:
            raise InvalidDeploy(f"--to {self.target} needs --set {name}=...{' (' + why + ')' if why else ''}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.get(name)
        if value is None:
            return default
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise InvalidDeploy(f"--set {name}={value!r}: expected true or false")

    def items_with_prefix(self, prefix: str) -> dict[str, str]:
        return {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}

    def csv(self, name: str) -> list[str]:
        value = self.get(name)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []
