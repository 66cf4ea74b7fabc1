"""Names → providers: Python blocks, declared entries and init functions, with provenance.

A name may have several providers (two plugins, or a user file redefining a built-in). The
clash is an error only when the name is used, so one bad pair never takes down the rest.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zoo._errors import AmbiguousNameError, DuplicateNameError, UnknownNameError, did_you_mean, listing
from zoo._language.declarations import Entry

BUILTIN = "zoo"  # distribution name of zoo's own default plugin
USER = "user"  # origin of files given by ZOO_REGISTRY or registry=


def normalize_dist(name: str) -> str:
    """PEP 503 normalisation, so `zoo_convnets:X` and `zoo-convnets:X` are the same."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Origin:
    """Who provides a name: a distribution and its version (or a user file)."""

    dist: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.dist} {self.version}" if self.version else self.dist


@dataclass(frozen=True)
class Provider:
    """One provider of a name: exactly one of `factory` (a Python block) or `entry` is set."""

    name: str
    origin: Origin
    factory: Callable[..., Any] | None = None
    entry: Entry | None = None

    @property
    def where(self) -> str:
        """Where it was defined: file:line for declarations, the module for Python blocks."""
        if self.entry is not None:
            return str(self.entry.loc)
        module = getattr(self.factory, "__module__", "?")
        return f"{module}.{getattr(self.factory, '__qualname__', self.name)}"


@dataclass(frozen=True)
class InitFn:
    """A registered function: an init function `fn(tensor, **kwargs)` for `init` rules, or an op."""

    name: str
    fn: Callable[..., Any]
    origin: Origin


class Registry:
    """Everything zoo can build, by name. Built by zoo._plugins.discovery; read by the builder."""

    def __init__(self) -> None:
        self._providers: dict[str, list[Provider]] = {}
        self._inits: dict[str, list[InitFn]] = {}
        self._ops: dict[str, list[InitFn]] = {}

    def copy(self) -> Registry:
        clone = Registry()
        clone._providers = {k: list(v) for k, v in self._providers.items()}
        clone._inits = {k: list(v) for k, v in self._inits.items()}
        clone._ops = {k: list(v) for k, v in self._ops.items()}
        return clone

    # --- adding -------------------------------------------------------------------------

    def add_block(self, name: str, factory: Callable[..., Any], origin: Origin) -> None:
        self._providers.setdefault(name, []).append(Provider(name, origin, factory=factory))

    def add_entries(self, entries: Iterable[Entry], origin: Origin) -> None:
        for entry in entries:
            self._providers.setdefault(entry.name, []).append(Provider(entry.name, origin, entry=entry))

    def add_init(self, name: str, fn: Callable[..., Any], origin: Origin) -> None:
        self._inits.setdefault(name.rstrip("_"), []).append(InitFn(name.rstrip("_"), fn, origin))

    def add_op(self, name: str, fn: Callable[..., Any], origin: Origin) -> None:
        self._ops.setdefault(name, []).append(InitFn(name, fn, origin))

    # --- reading ------------------------------------------------------------------------

    def names(self, pattern: str | None = None) -> list[str]:
        """Every name, sorted; `pattern` is a glob (`*mlp*`), case-insensitive as in timm."""
        names = sorted(self._providers)
        if pattern:
            names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
        return names

    def providers(self, name: str) -> list[Provider]:
        """All providers of a bare name, in the order they were added."""
        return list(self._providers.get(name, ()))

    def __contains__(self, name: str) -> bool:
        return self._split(name)[1] in self._providers

    def resolve(self, name: str, where: str = "") -> Provider:
        """The provider that `name` (bare or `DIST:name`) means. Raises on unknown or clashing names."""
        dist, base = self._split(name)
        at = f"{where}: " if where else ""
        candidates = self._providers.get(base)
        if not candidates:
            raise UnknownNameError(
                f"{at}unknown block or entry '{base}'.{did_you_mean(base, self._providers)} "
                f"Run `zoo list` to see what exists, or install the plugin that provides it."
            )
        if dist is not None:
            chosen = [p for p in candidates if normalize_dist(p.origin.dist) == normalize_dist(dist)]
            if not chosen:
                dists = listing(p.origin.dist for p in candidates)
                raise UnknownNameError(f"{at}'{base}' is not provided by '{dist}'; it is provided by: {dists}.")
            return chosen[-1]
        return self._choose(base, candidates, at)

    def _choose(self, name: str, candidates: list[Provider], at: str) -> Provider:
        if len(candidates) == 1:
            return candidates[0]
        replacing = [p for p in candidates if p.entry is not None and p.entry.replace]
        if replacing:
            return replacing[-1]
        dists = {p.origin.dist for p in candidates}
        if USER in dists or len(dists) == 1:
            places = " and ".join(p.where for p in candidates)
            raise DuplicateNameError(
                f"{at}'{name}' is defined more than once: {places}. Add `replace = true` to the "
                f"declaration that should win, or rename one of them."
            )
        if BUILTIN in dists:  # a plugin may not shadow a built-in; it stays reachable qualified
            return next(p for p in candidates if p.origin.dist == BUILTIN)
        qualified = " or ".join(f"'{p.origin.dist}:{name}'" for p in candidates)
        both = " and ".join(str(p.origin) for p in candidates)
        raise AmbiguousNameError(
            f"{at}'{name}' is provided by both {both}. Pick one with a qualified name ({qualified}), "
            f"or disable one plugin with ZOO_DISABLE_PLUGINS."
        )

    def init_fn(self, name: str, where: str = "") -> InitFn:
        """The init function `name` (a trailing underscore is ignored: normal_ = normal)."""
        return _pick(self._inits, name.rstrip("_"), "init function", where, "")

    def init_names(self) -> list[str]:
        return sorted(self._inits)

    def op(self, name: str, where: str = "") -> InitFn:
        """The op `name` for a dataflow block."""
        return _pick(self._ops, name, "op", where, " A block with parameters is a `type`, not an `op`.")

    def clashes(self) -> list[str]:
        """Names provided more than once, for `zoo check` and `zoo plugins`."""
        return sorted(n for n, ps in self._providers.items() if len(ps) > 1)

    @staticmethod
    def _split(name: str) -> tuple[str | None, str]:
        if ":" in name:
            dist, base = name.split(":", 1)
            return dist, base
        return None, name


def _pick(table: dict[str, list[InitFn]], name: str, kind: str, where: str, hint: str) -> InitFn:
    """The function registered as `name`; zoo's own wins over a plugin's of the same name."""
    candidates = table.get(name)
    if not candidates:
        at = f"{where}: " if where else ""
        raise UnknownNameError(
            f"{at}unknown {kind} '{name}'.{did_you_mean(name, table)} Known: {listing(table, limit=40)}.{hint}"
        )
    builtin = [c for c in candidates if c.origin.dist == BUILTIN]
    return builtin[0] if builtin else candidates[-1]
