"""Names → providers: Python blocks, declared entries and init functions, with provenance.

A name may have several providers (two plugins, or a user file redefining a built-in). The
clash is an error only when the name is used, so one bad pair never takes down the rest.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zoo._errors import AmbiguousNameError, DuplicateNameError, PluginError, UnknownNameError, did_you_mean, listing
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


class Deferred:
    """A callable that a plugin registered by its import path ("torch.nn:Linear"), loaded on first use.

    So discovery knows every name without importing torch or the plugins' modules: `zoo list`
    and `zoo --help` never wait for them. The path is written in the plugin's own Python code
    (its `register` call), never in a declaration; zoo._plugins.discovery supplies `load`.
    """

    def __init__(self, path: str, load: Callable[[], Callable[..., Any]]) -> None:
        self.path = path
        self._load = load
        self._value: Callable[..., Any] | None = None

    def get(self) -> Callable[..., Any]:
        """The callable, imported on the first call."""
        if self._value is None:
            self._value = self._load()
        return self._value

    def __repr__(self) -> str:
        return f"Deferred({self.path!r})"


Registered = Callable[..., Any] | Deferred  # what a plugin's `register` call gave


def _loaded(registered: Registered, what: str, origin: Origin, where: str = "") -> Callable[..., Any]:
    if not isinstance(registered, Deferred):
        return registered
    try:
        return registered.get()
    except Exception as err:  # the plugin's module fails to import, or lacks the name: a plugin's fault
        at = f"{where}: " if where else ""
        raise PluginError(
            f"{at}{what} from {origin} is registered as '{registered.path}', which cannot be loaded: "
            f"{type(err).__name__}: {err}"
        ) from err


@dataclass(frozen=True)
class Provider:
    """One provider of a name: exactly one of `registered` (a Python block) or `entry` is set."""

    name: str
    origin: Origin
    registered: Registered | None = None
    entry: Entry | None = None

    @property
    def factory(self) -> Callable[..., Any] | None:
        """The Python block (imported now when it was registered by path); None for a declared entry.

        Raises:
            PluginError: a block registered by path cannot be imported.
        """
        return None if self.registered is None else _loaded(self.registered, f"block '{self.name}'", self.origin)

    @property
    def where(self) -> str:
        """Where it was defined: file:line for declarations, the module for Python blocks."""
        if self.entry is not None:
            return str(self.entry.loc)
        try:
            factory = self.factory
        except PluginError:
            assert isinstance(self.registered, Deferred)
            return self.registered.path.replace(":", ".")
        module = getattr(factory, "__module__", "?")
        return f"{module}.{getattr(factory, '__qualname__', self.name)}"


@dataclass(frozen=True)
class InitFn:
    """A registered function: an init function `fn(tensor, **kwargs)` for `init` rules, or an op."""

    name: str
    registered: Registered
    origin: Origin
    kind: str = "init function"  # or "op", for messages

    @property
    def fn(self) -> Callable[..., Any]:
        """The function (imported now when it was registered by path). Raises PluginError if it cannot be."""
        return _loaded(self.registered, f"{self.kind} '{self.name}'", self.origin)


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

    def add_block(self, name: str, factory: Registered, origin: Origin) -> None:
        self._providers.setdefault(name, []).append(Provider(name, origin, registered=factory))

    def add_entries(self, entries: Iterable[Entry], origin: Origin) -> None:
        for entry in entries:
            providers = self._providers.setdefault(entry.name, [])
            # One declaration read twice (`zoo check --registry architectures/hf_llama.toml`, a built-in
            # file) is no clash: the later reading stands, so the file is checked as the user's.
            providers[:] = [p for p in providers if p.entry is None or not _same_place(p.entry, entry)]
            providers.append(Provider(entry.name, origin, entry=entry))

    def add_init(self, name: str, fn: Registered, origin: Origin) -> None:
        self._inits.setdefault(name.rstrip("_"), []).append(InitFn(name.rstrip("_"), fn, origin))

    def add_op(self, name: str, fn: Registered, origin: Origin) -> None:
        self._ops.setdefault(name, []).append(InitFn(name, fn, origin, kind="op"))

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
        """The provider that `name` (bare or `DIST:name`) means, its Python block imported.

        Raises on unknown or clashing names, and PluginError for a block that cannot be imported.
        """
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
            provider = chosen[-1]
        else:
            provider = self._choose(base, candidates, at)
        if provider.registered is not None:  # a block registered by path is imported where it is first used
            _loaded(provider.registered, f"block '{base}'", provider.origin, where)
        return provider

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
        """The init function `name` (a trailing underscore is ignored: normal_ = normal), imported."""
        return _pick(self._inits, name.rstrip("_"), "init function", where, "")

    def init_names(self) -> list[str]:
        return sorted(self._inits)

    def inits(self, name: str) -> list[InitFn]:
        """Every registration of the init function `name`, in order, none of them imported."""
        return list(self._inits.get(name.rstrip("_"), ()))

    def op(self, name: str, where: str = "") -> InitFn:
        """The op `name` for a dataflow block, imported."""
        return _pick(self._ops, name, "op", where, " A block with parameters is a `type`, not an `op`.")

    def load_all(self, origin: Origin) -> list[PluginError]:
        """Import everything `origin` registered by path (for `zoo plugins`); one error per failure."""
        registered: list[tuple[str, Registered]] = [
            (f"block '{p.name}'", p.registered)
            for ps in self._providers.values()
            for p in ps
            if p.origin == origin and p.registered is not None
        ]
        for table in (self._inits, self._ops):
            registered += [
                (f"{f.kind} '{f.name}'", f.registered) for fs in table.values() for f in fs if f.origin == origin
            ]
        errors = []
        for what, value in registered:
            try:
                _loaded(value, what, origin)
            except PluginError as err:
                errors.append(err)
        return errors

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
    chosen = builtin[0] if builtin else candidates[-1]
    _loaded(chosen.registered, f"{kind} '{name}'", chosen.origin, where)
    return chosen


def _same_place(a: Entry, b: Entry) -> bool:
    """Whether two entries were read from one line of one file, whatever path (a symlink, a relative one) named it."""
    if a.loc.line != b.loc.line:
        return False
    try:
        return os.path.samefile(a.loc.file, b.loc.file)
    except OSError:  # a text parsed in memory ("<string>"), or a file gone since
        return False
