"""Plugin discovery: entry points in group `zoo`, loaded on first use, each one isolated.

A plugin that fails to import or raises in a hook is reported once (a warning naming the
distribution, its version and the error) and skipped; its partial registrations are dropped.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.errors import UnknownNameError, did_you_mean, listing
from zoo.registry import BUILTIN, USER, Origin, Registry, normalize_dist
from zoo.spec import Entry, parse_file

DISABLE_ENV = "ZOO_DISABLE_PLUGINS"
REGISTRY_ENV = "ZOO_REGISTRY"


class ZooPluginWarning(UserWarning):
    """A plugin was skipped, or tried to shadow a built-in name."""


@dataclass
class PluginReport:
    """What `zoo plugins` shows for one plugin."""

    name: str  # entry-point name
    dist: str
    version: str | None
    module: str
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None
    seconds: float = 0.0
    provides: list[str] = field(default_factory=list)


@dataclass
class _Staged:
    """One plugin's registrations, committed to the registry only if the whole plugin succeeds."""

    blocks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    inits: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)


def _run_hooks(plugin: object, name: str, origin: Origin) -> _Staged:
    """Call the plugin's hooks with `register` callbacks; raise whatever the plugin raises."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name=name)
    manager.check_pending()  # a misspelt hook name is an error, not a silent no-op
    staged = _Staged()

    def register_block(block_name: str, factory: Callable[..., Any]) -> None:
        if not isinstance(block_name, str) or not callable(factory):
            raise TypeError(f"register(name, factory) needs a str and a callable, got {block_name!r}, {factory!r}")
        staged.blocks.append((block_name, factory))

    def register_registry(path: str | Path) -> None:
        staged.entries.extend(parse_file(path, origin=origin.dist).values())

    def register_init(init_name: str, fn: Callable[..., Any]) -> None:
        staged.inits.append((init_name, fn))

    manager.hook.zoo_blocks(register=register_block)
    manager.hook.zoo_registries(register=register_registry)
    manager.hook.zoo_initializers(register=register_init)
    return staged


def _commit(registry: Registry, staged: _Staged, origin: Origin, report: PluginReport | None) -> None:
    for name, factory in staged.blocks:
        registry.add_block(name, factory, origin)
    registry.add_entries(staged.entries, origin)
    for name, fn in staged.inits:
        registry.add_init(name, fn, origin)
    if report is not None:
        report.provides = sorted({n for n, _ in staged.blocks} | {e.name for e in staged.entries})
        shadowed = [n for n in report.provides if any(p.origin.dist == BUILTIN for p in registry.providers(n))]
        if shadowed:
            warnings.warn(
                f"zoo: plugin '{report.name}' ({origin}) registers built-in name(s) {listing(shadowed)}; "
                f"the built-ins stay the default, the plugin's are reachable as '{origin.dist}:NAME'.",
                ZooPluginWarning,
                stacklevel=2,
            )


def _disabled() -> set[str]:
    return {normalize_dist(n.strip()) for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _user_files() -> list[str]:
    return [p for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p]


def discover(
    plugins: Iterable[str | ModuleType | object] | None = None, files: Iterable[str | Path] = ()
) -> tuple[Registry, list[PluginReport]]:
    """A fresh registry: the built-ins, then plugins, then user files.

    Args:
        plugins: None for every installed entry point (minus ZOO_DISABLE_PLUGINS); otherwise
            only these: entry-point or distribution names, or in-process plugin objects.
        files: user registry files, added last (after ZOO_REGISTRY's when plugins is None).
    """
    from zoo import __version__, builtin

    registry = Registry()
    builtin_origin = Origin(BUILTIN, __version__)
    _commit(registry, _run_hooks(builtin, "zoo.builtin", builtin_origin), builtin_origin, None)
    reports: list[PluginReport] = []
    installed = list(metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP))
    if plugins is None:
        disabled = _disabled()
        for ep in installed:
            reports.append(_load_entry_point(registry, ep, disabled))
        files = [*_user_files(), *files]
    else:
        for plugin in plugins:
            if isinstance(plugin, str):
                reports.append(_load_entry_point(registry, _find_entry_point(plugin, installed), set()))
            else:
                reports.append(_load_object(registry, plugin))
    for path in files:
        registry.add_entries(parse_file(path, origin=USER).values(), Origin(USER))
    return registry, reports


def _find_entry_point(name: str, installed: list[metadata.EntryPoint]) -> metadata.EntryPoint:
    for ep in installed:
        if name == ep.name or (ep.dist and normalize_dist(name) == normalize_dist(ep.dist.name)):
            return ep
    known = [ep.name for ep in installed] + [ep.dist.name for ep in installed if ep.dist]
    raise UnknownNameError(f"no installed zoo plugin named '{name}'.{did_you_mean(name, known)} Installed: {listing(known)}.")


def _load_entry_point(registry: Registry, ep: metadata.EntryPoint, disabled: set[str]) -> PluginReport:
    dist = ep.dist.name if ep.dist else ep.name
    version = ep.dist.version if ep.dist else None
    report = PluginReport(ep.name, dist, version, ep.value)
    if {"all", normalize_dist(ep.name), normalize_dist(dist)} & disabled:
        report.status = "disabled"
        return report
    start = time.perf_counter()
    origin = Origin(dist, version)
    try:
        staged = _run_hooks(ep.load(), ep.name, origin)
        _commit(registry, staged, origin, report)
    except Exception as err:  # any failure inside a plugin must not take zoo down
        report.status, report.error = "failed", f"{type(err).__name__}: {err}"
        warnings.warn(
            f"zoo: plugin '{ep.name}' from {dist} {version or ''} failed and was skipped: {report.error}",
            ZooPluginWarning,
            stacklevel=3,
        )
    report.seconds = time.perf_counter() - start
    return report


def _load_object(registry: Registry, plugin: object) -> PluginReport:
    name = getattr(plugin, "__name__", type(plugin).__name__)
    origin = Origin(getattr(plugin, "__name__", name).split(".")[0])
    report = PluginReport(name, origin.dist, None, name)
    start = time.perf_counter()
    _commit(registry, _run_hooks(plugin, name, origin), origin, report)  # in-process: let errors surface
    report.seconds = time.perf_counter() - start
    return report


# --- the process-wide registry, created on first use ----------------------------------------

_state: dict[str, Any] = {"registry": None, "reports": [], "local": []}


def current() -> Registry:
    """The registry every zoo call uses, discovered on first use (never at `import zoo`)."""
    if _state["registry"] is None:
        registry, reports = discover()
        for name, factory, origin in _state["local"]:
            registry.add_block(name, factory, origin)
        _state["registry"], _state["reports"] = registry, reports
    registry: Registry = _state["registry"]
    return registry


def reports() -> list[PluginReport]:
    """What discovery found: one report per installed plugin."""
    current()
    return list(_state["reports"])


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

