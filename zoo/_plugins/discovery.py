"""Plugin discovery: entry points in group `zoo`, loaded on first use, each one isolated.

A plugin that fails to import or raises in a hook is reported once (a warning naming the
distribution, its version and the error) and skipped; its partial registrations are dropped.
Nothing here runs at `import zoo`: the registry is discovered by the first call that needs it.
What a plugin registers by import path ("torch.nn:Linear") is imported where it is first used,
so discovery itself needs neither torch nor the plugins' block modules.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pluggy

from zoo._errors import PluginError, UnknownNameError, did_you_mean, listing
from zoo._language.declarations import Entry, Node, SharedRef, parse_file
from zoo._language.registry import BUILTIN, USER, Deferred, Origin, Registered, Registry, normalize_dist
from zoo._plugins import builtin, hookspecs
from zoo._version import __version__

DISABLE_ENV = "ZOO_DISABLE_PLUGINS"
REGISTRY_ENV = "ZOO_REGISTRY"
DISABLE_ALL = "all"


class ZooPluginWarning(UserWarning):
    """A plugin was skipped, or tried to shadow or replace a name it does not own."""


@dataclass
class PluginReport:
    """What `zoo plugins` shows for one plugin."""

    name: str  # entry-point name ("zoo" for the built-in default plugin)
    dist: str  # distribution that ships it
    version: str | None
    module: str  # what the entry point loads, e.g. "zoo_convnets"
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None  # why it failed: "ImportError: ..."
    seconds: float = 0.0  # import plus hooks (plus, after `imported()`, what it registered by import path)
    blocks: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    inits: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    shadowed: list[str] = field(default_factory=list)  # built-in names it also registers (ignored bare)
    notes: list[str] = field(default_factory=list)  # what zoo ignored, each also given as a ZooPluginWarning
    imported: bool = False  # whether what it registered by import path has been imported (and timed)

    @property
    def provides(self) -> list[str]:
        """Every block and entry name the plugin registers, sorted."""
        return sorted({*self.blocks, *self.entries})


@dataclass
class _Staged:
    """One plugin's registrations, committed to the registry only if the whole plugin succeeds."""

    blocks: list[tuple[str, Registered]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    inits: list[tuple[str, Registered]] = field(default_factory=list)
    ops: list[tuple[str, Registered]] = field(default_factory=list)

    def names(self) -> set[str]:
        return {n for n, _ in self.blocks} | {e.name for e in self.entries}

    def load_all(self) -> None:
        """Import everything registered by path now; raise what the first failure raises."""
        for _, value in (*self.blocks, *self.inits, *self.ops):
            if isinstance(value, Deferred):
                value.get()


# "package.module:attribute.path", as an entry point names its object
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _registered(value: Callable[..., Any] | str) -> Registered:
    """A `register` call's callable as given, or its import path as a Deferred."""
    if not isinstance(value, str):
        return value
    if not _IMPORT_PATH.fullmatch(value):
        raise TypeError(f"an import path is 'package.module:attribute', as in an entry point; got {value!r}")
    return Deferred(value, lambda: _import(value))


def _is_callable(value: object) -> bool:
    return callable(value) or isinstance(value, str)  # a string: the callable's import path


def _import(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"{path} is {value!r}, which is not callable")
    return value  # type: ignore[no-any-return]


# --- running one plugin's hooks -------------------------------------------------------------


def _run_hooks(plugin: object, name: str, origin: Origin) -> _Staged:
    """Call the plugin's hooks with `register` callbacks; raise whatever goes wrong."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    _check_hookimpls(manager, plugin)
    manager.register(plugin, name=name)
    staged = _Staged()
    here = _plugin_dir(plugin)

    def register_block(block_name: str, factory: Callable[..., Any] | str) -> None:
        if not isinstance(block_name, str) or not block_name or ":" in block_name or not _is_callable(factory):
            raise TypeError(
                f"register(name, factory) needs a name without ':' and a callable (or its import path), "
                f"got {block_name!r}, {factory!r}"
            )
        staged.blocks.append((block_name, _registered(factory)))

    def register_registry(path: str | Path) -> None:
        path = Path(path)
        if not path.is_absolute() and here is not None:  # relative to the plugin, not to the user's cwd
            path = here / path
        staged.entries.extend(parse_file(path, origin=origin.dist).values())

    def register_init(init_name: str, fn: Callable[..., Any] | str) -> None:
        if not isinstance(init_name, str) or not init_name or not _is_callable(fn):
            raise TypeError(
                f"register(name, fn) needs a name and a callable (or its import path), got {init_name!r}, {fn!r}"
            )
        staged.inits.append((init_name, _registered(fn)))

    def register_op(op_name: str, fn: Callable[..., Any] | str) -> None:
        if not isinstance(op_name, str) or not op_name.isidentifier() or not _is_callable(fn):
            raise TypeError(
                f"register(name, fn) needs an identifier and a callable (or its import path), got {op_name!r}, {fn!r}"
            )
        staged.ops.append((op_name, _registered(fn)))

    manager.hook.zoo_blocks(register=register_block)
    manager.hook.zoo_registries(register=register_registry)
    manager.hook.zoo_initializers(register=register_init)
    manager.hook.zoo_ops(register=register_op)
    return staged


def _check_hookimpls(manager: pluggy.PluginManager, plugin: object) -> None:
    """A misspelt or unmarked hook is an error, not a plugin that silently provides nothing."""
    hooks = [n for n in dir(hookspecs) if n.startswith("zoo_")]
    marked = []
    for attr in dir(plugin):
        opts = manager.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        hook = opts.get("specname") or attr
        if hook not in hooks:
            raise PluginError(f"'{hook}' is not a zoo hook.{did_you_mean(hook, hooks)} zoo's hooks: {listing(hooks)}.")
        marked.append(hook)
    if not marked:
        unmarked = [h for h in hooks if callable(getattr(plugin, h, None))]
        if unmarked:
            raise PluginError(f"{listing(unmarked)} must be marked @zoo.hookimpl, or zoo does not call it.")
        raise PluginError(f"the module defines no @zoo.hookimpl function (zoo's hooks: {listing(hooks)}).")


def _plugin_dir(plugin: object) -> Path | None:
    module = plugin if isinstance(plugin, ModuleType) else sys.modules.get(type(plugin).__module__)
    file = getattr(module, "__file__", None)
    return Path(file).parent if file else None


# --- committing a plugin's registrations ----------------------------------------------------


def _commit(registry: Registry, staged: _Staged, origin: Origin, report: PluginReport) -> None:
    """Add a plugin's blocks, entries and init functions; fill `report` with what it provides."""
    report.blocks = sorted({n for n, _ in staged.blocks})
    report.entries = sorted({e.name for e in staged.entries})
    report.inits = sorted({n for n, _ in staged.inits})
    report.ops = sorted({n for n, _ in staged.ops})
    report.shadowed = sorted(_builtin_names(registry, staged))
    for name, factory in staged.blocks:
        registry.add_block(name, factory, origin)
    registry.add_entries(staged.entries, origin)
    for name, fn in staged.inits:
        registry.add_init(name, fn, origin)
    for name, fn in staged.ops:
        registry.add_op(name, fn, origin)


def _builtin_names(registry: Registry, staged: _Staged) -> set[str]:
    names = {n for n in staged.names() if any(p.origin.dist == BUILTIN for p in registry.providers(n))}
    for init_name, _ in staged.inits:
        if any(f.origin.dist == BUILTIN for f in registry.inits(init_name)):
            names.add(init_name)
    return names


def _own_entries(staged: _Staged, origin: Origin, notes: list[str]) -> list[Entry]:
    """The plugin's entries, made robust against other distributions.

    A bare name that the plugin itself provides is qualified (`zoo-convnets:Residual`), so a
    third plugin registering the same name cannot break this plugin's declarations. And
    `replace = true` is dropped (with a note): only the user's own files may replace a name.
    """
    own = staged.names()
    dist = normalize_dist(origin.dist)
    entries = []
    for entry in staged.entries:
        if entry.replace:
            notes.append(
                f"`replace = true` for '{entry.name}' at {entry.loc} is ignored: only your own registry files "
                f"may replace a name; where it clashes, the clash is reported at use"
            )
        entries.append(dataclasses.replace(entry, node=_qualify(entry.node, own, dist), replace=False))
    return entries


def _qualify(node: Node, own: set[str], dist: str) -> Node:
    def value(v: Any) -> Any:
        if isinstance(v, Node):
            return _qualify(v, own, dist)
        if isinstance(v, tuple):
            return tuple(value(x) for x in v)
        if isinstance(v, Mapping):
            return MappingProxyType({k: value(x) for k, x in v.items()})
        return v

    layers = None if node.layers is None else tuple(c if isinstance(c, SharedRef) else value(c) for c in node.layers)
    return dataclasses.replace(
        node,
        type=f"{dist}:{node.type}" if isinstance(node.type, str) and node.type in own else node.type,
        kwargs=value(node.kwargs),
        layers=layers,
        shared=value(node.shared),
    )


def _warn(message: str) -> None:
    warnings.warn(message, ZooPluginWarning, stacklevel=3)


# --- discovery ------------------------------------------------------------------------------


def _disabled() -> set[str]:
    return {normalize_dist(n.strip()) for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _user_files() -> list[str]:
    return [p for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p]


def _installed() -> list[metadata.EntryPoint]:
    """The `zoo` entry points of every installed distribution, in a stable order."""
    eps = metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
    return sorted(eps, key=lambda ep: (normalize_dist(ep.dist.name) if ep.dist else "", ep.name))


def discover(
    plugins: Iterable[str | ModuleType | object] | None = None, files: Iterable[str | Path] = ()
) -> tuple[Registry, list[PluginReport]]:
    """A fresh registry: the built-ins, then plugins, then user files.

    Args:
        plugins: None for every installed entry point (minus ZOO_DISABLE_PLUGINS), where a
            failing plugin is reported and skipped; otherwise only these, entry-point or
            distribution names or in-process plugin objects, and a failure raises (what they
            register by import path is imported at once, so a wrong path fails here too).
        files: user registry files, added last (after ZOO_REGISTRY's when plugins is None).

    Returns:
        The registry, and one report per plugin with the built-in default plugin first.

    Raises:
        UnknownNameError: a named plugin is not installed.
        PluginError: a named plugin fails to load.
    """
    registry = Registry()
    reports = [_load(registry, lambda: builtin, "zoo", Origin(BUILTIN, __version__), builtin.__name__, strict=True)]
    if plugins is None:
        disabled = _disabled()
        installed = _installed()
        for problem in disable_problems(installed):
            _warn(f"zoo: {problem}")
        for ep in installed:
            reports.append(_load_entry_point(registry, ep, disabled, strict=False))
        files = [*_user_files(), *files]
    else:
        installed = None
        for plugin in plugins:
            if isinstance(plugin, str):
                installed = installed if installed is not None else _installed()
                for ep in _find_entry_points(plugin, installed):
                    reports.append(_load_entry_point(registry, ep, set(), strict=True))
            else:
                name = getattr(plugin, "__name__", type(plugin).__name__)
                origin = _origin_of(plugin)
                reports.append(_load(registry, _given(plugin), name, origin, name, strict=True, load_all=True))
    for path in files:
        registry.add_entries(parse_file(path, origin=USER).values(), Origin(USER))
    return registry, reports


def _given(plugin: object) -> Callable[[], object]:
    """A `load` for a plugin object that is already in hand."""
    return lambda: plugin


def _names_of(ep: metadata.EntryPoint) -> set[str]:
    return {normalize_dist(ep.name)} | ({normalize_dist(ep.dist.name)} if ep.dist else set())


def disable_problems(installed: list[metadata.EntryPoint] | None = None) -> list[str]:
    """One message per name in ZOO_DISABLE_PLUGINS that matches no installed plugin (a typo, say)."""
    installed = _installed() if installed is None else installed
    known = {n for ep in installed for n in _names_of(ep)}
    return [
        f"{DISABLE_ENV} names '{name}', which is no installed plugin.{did_you_mean(name, known)} "
        f"Installed: {listing(known)}; use '{DISABLE_ALL}' for every one."
        for name in sorted(_disabled() - known - {DISABLE_ALL})
    ]


def _find_entry_points(name: str, installed: list[metadata.EntryPoint]) -> list[metadata.EntryPoint]:
    found = [ep for ep in installed if normalize_dist(name) in _names_of(ep)]
    if found:
        return found
    known = sorted({n for ep in installed for n in (ep.name, ep.dist.name if ep.dist else ep.name)})
    raise UnknownNameError(
        f"no installed zoo plugin named '{name}'.{did_you_mean(name, known)} Installed (entry point or "
        f"distribution): {listing(known)}. Install it (pip install -e .), or pass the plugin module itself."
    )


def _load_entry_point(registry: Registry, ep: metadata.EntryPoint, disabled: set[str], strict: bool) -> PluginReport:
    dist = ep.dist.name if ep.dist else ep.name
    origin = Origin(dist, ep.dist.version if ep.dist else None)
    if {DISABLE_ALL, *_names_of(ep)} & disabled:
        return PluginReport(ep.name, dist, origin.version, ep.value, status="disabled")
    return _load(registry, ep.load, ep.name, origin, ep.value, strict, load_all=strict)


def _load(
    registry: Registry,
    load: Callable[[], object],
    name: str,
    origin: Origin,
    module: str,
    strict: bool,
    load_all: bool = False,
) -> PluginReport:
    """Import the plugin (`load` is an entry point's) and run its hooks, all or nothing.

    With `load_all`, what it registers by import path is imported too, as part of the all or nothing.

    Raises:
        PluginError: the plugin failed and `strict` is set; otherwise it is reported and skipped.
    """
    report = PluginReport(name, origin.dist, origin.version, module, imported=load_all)
    start = time.perf_counter()
    try:
        staged = _run_hooks(load(), name, origin)  # load() imports: the import itself may fail
        if load_all:
            staged.load_all()
        if origin.dist != BUILTIN:
            staged.entries = _own_entries(staged, origin, report.notes)
        _commit(registry, staged, origin, report)
    except (Exception, SystemExit) as err:  # a plugin must not take zoo down, not even with sys.exit()
        report.status, report.error = "failed", f"{type(err).__name__}: {err}"
        if strict:
            raise PluginError(f"plugin '{name}' from {origin} failed: {report.error}") from err
        _warn(f"zoo: plugin '{name}' from {origin} failed and was skipped: {report.error}")
    report.seconds = time.perf_counter() - start
    if report.shadowed:
        report.notes.append(
            f"registers built-in name(s) {listing(report.shadowed)}: the built-ins stay the default, "
            f"the plugin's are reachable as '{normalize_dist(origin.dist)}:NAME'"
        )
    for note in report.notes if report.status == "ok" else ():
        _warn(f"zoo: plugin '{name}' ({origin}): {note}.")  # after the commit: an error filter cannot split a plugin
    return report


def _origin_of(plugin: object) -> Origin:
    """The distribution an in-process plugin object comes from, when it is installed."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    top = module.split(".")[0]
    for dist in metadata.packages_distributions().get(top, ()):
        try:
            return Origin(dist, metadata.version(dist))
        except metadata.PackageNotFoundError:  # listed by one path entry, gone from another
            continue
    return Origin(top)


# --- the process-wide registry, created on first use ----------------------------------------

_state: dict[str, Any] = {"registry": None, "reports": [], "local": []}


def current() -> Registry:
    """The registry every zoo call uses, discovered on first use (never at `import zoo`)."""
    if _state["registry"] is None:
        found, reports = discover()
        for name, factory, origin in _state["local"]:
            found.add_block(name, factory, origin)
        _state["registry"], _state["reports"] = found, reports
    registry: Registry = _state["registry"]
    return registry


def reports() -> list[PluginReport]:
    """What discovery found: the built-in default plugin, then one report per installed plugin."""
    current()
    return list(_state["reports"])


def imported() -> list[PluginReport]:
    """reports(), after importing everything each plugin registered by import path (`zoo plugins`).

    Each plugin's `seconds` then counts those imports too (the built-in plugin's, torch), and a
    path that cannot be imported is a note on its plugin: its name stays, and fails where used.
    """
    registry = current()
    found: list[PluginReport] = _state["reports"]
    for report in found:
        if report.status == "ok" and not report.imported:
            start = time.perf_counter()
            report.notes += [str(err) for err in registry.load_all(Origin(report.dist, report.version))]
            report.seconds += time.perf_counter() - start
            report.imported = True
    return list(found)


def reset() -> None:
    """Forget the discovered registry; the next use discovers again (after pip install, say)."""
    _state["registry"] = None
    _state["reports"] = []


def register_local(name: str, factory: Callable[..., Any]) -> None:
    """Register a Python block in this process only (zoo.register)."""
    origin = Origin(getattr(factory, "__module__", "local").split(".")[0])
    _state["local"].append((name, factory, origin))
    if _state["registry"] is not None:
        _state["registry"].add_block(name, factory, origin)


@contextmanager
def isolated(*plugins: str | ModuleType | object, files: Iterable[str | Path] = ()) -> Iterator[Registry]:
    """A fresh registry holding the built-ins plus only `plugins`, for plugin authors' tests.

    Other installed plugins, ZOO_REGISTRY, ZOO_DISABLE_PLUGINS and `zoo.register` calls made
    outside are not seen; everything is restored on exit.

    Args:
        plugins: installed plugins by entry-point or distribution name ("zoo-convnets"), or
            plugin objects (a module with @zoo.hookimpl functions) that need not be installed.
        files: registry files to add, as a user's.

    Raises:
        UnknownNameError: a named plugin is not installed.
        PluginError: a plugin fails to import or raises in a hook.

    Example:
        with zoo.isolated_registry("zoo-convnets") as registry:
            model = zoo.build("resnet18")
    """
    saved = dict(_state)
    registry, found = discover(plugins, files)
    _state.update(registry=registry, reports=found, local=[])
    try:
        yield registry
    finally:
        _state.clear()
        _state.update(saved)


def with_files(files: Iterable[str | Path]) -> Registry:
    """The current registry plus user files (build's `registry=`); files are checked for clashes."""
    files = list(files)
    if not files:
        return current()
    registry = current().copy()
    for path in files:
        registry.add_entries(parse_file(path, origin=USER).values(), Origin(USER))
    return registry
