"""zoo's error hierarchy: every user-facing failure is a ZooError.

Each message says what was asked, where zoo looked (file:line or an entry path such as
`chimera -> layers[2]`), what exists, the nearest name, and what to do next. Each class also
subclasses the natural builtin, so `except KeyError` keeps working for callers that expect it.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable
from typing import Any


class ZooError(Exception):
    """Base class of every error zoo raises on bad input.

    A message that tells a Python caller what to pass (`strict=False`, `zoo.save(model, ...)`) may
    carry the same advice in the command line's words too (`--non-strict`, `zoo save NAME DIR`):
    `cli=`, shown by the `zoo` command through `for_cli()`.
    """

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli

    def for_cli(self) -> str:
        """The message in the command line's words, where they differ from Python's."""
        return self.cli if self.cli is not None else str(self)


class RegistryFileError(ZooError, ValueError):
    """A registry file cannot be read or is not valid TOML."""


class SpecError(ZooError, ValueError):
    """A declaration is malformed: a reserved key with the wrong shape, a bad reference."""


class UnknownNameError(ZooError, KeyError):
    """A block, entry, argument, plugin or init function that does not exist."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class AmbiguousNameError(ZooError, LookupError):
    """Two distributions provide the same name."""


class DuplicateNameError(ZooError, ValueError):
    """A name is declared twice without `replace = true`."""


class ArgumentError(ZooError, TypeError):
    """An argument is unknown, missing, or of the wrong type for its block."""


class CycleError(ZooError, ValueError):
    """Declarations refer to each other in a loop."""


class BuildError(ZooError, RuntimeError):
    """A block's constructor raised although its arguments checked out."""


class NotMaterializedError(ZooError, RuntimeError):
    """An operation needs concrete parameters but the model still has lazy ones."""


class ShapeError(ZooError, ValueError):
    """An input does not fit the model: its forward pass rejects the input's shape or dtype."""


class WeightsError(ZooError, ValueError):
    """A weights file is missing, corrupt, unsafe, or does not fit the model."""


class DeviceError(ZooError, ValueError):
    """A device that is not there, or a model that does not fit the memory given."""


class DistributedError(ZooError, RuntimeError):
    """A sharded build, load or save that cannot run: no process group, a mesh that does not fit, a failed rank."""


class HubError(ZooError, RuntimeError):
    """A Hub repository or file cannot be fetched or pushed."""


class MissingDependencyError(ZooError, ImportError):
    """An optional extra that a feature needs is not installed (the message says which to install)."""


class PluginError(ZooError, RuntimeError):
    """A plugin fails to import, raises in a hook, or implements hooks wrongly."""


def cli_words(err: BaseException) -> str:
    """An error's message as the command line says it (for a message that quotes another error)."""
    return err.for_cli() if isinstance(err, ZooError) else str(err)


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `name`, or None when nothing is close."""
    pool = list(candidates)
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not matches:  # case slips ("linear" for "Linear") score low on raw similarity
        lowered = {c.lower(): c for c in pool}
        matches = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=1, cutoff=0.6)]
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean 'x'?' or an empty string, to append to a message."""
    match = nearest(name, candidates)
    return f" Did you mean '{match}'?" if match else ""


def listing(names: Iterable[str], limit: int = 12) -> str:
    """A short, sorted, comma-separated list of names, cut after `limit`."""
    shown = sorted(set(names))
    text = ", ".join(shown[:limit])
    if len(shown) > limit:
        text += f", … ({len(shown) - limit} more)"
    return text or "(none)"


def meta_limit(err: BaseException) -> bool:
    """Whether an error from a forward on the meta device says only that meta tensors have no data
    (`.item()`, a loop on a value, an op without a meta kernel), not that the model or input is wrong."""
    if isinstance(err, NotImplementedError):
        return True
    # A meta kernel's own shape check prints its tensors as `MetaFloatType{[2, 3]}`: that is the
    # model or input being wrong, exactly as on a real device, so only the words count.
    words = _META_TENSOR_REPR.sub("", str(err))
    return _META_LIMIT.search(words) is not None


_META_TENSOR_REPR = re.compile(r"Meta\w*Type\{[^}]*\}")
_META_LIMIT = re.compile(r"\bmeta (tensor|device)", re.IGNORECASE)  # "cannot be called on meta tensors", …


_SHORT = reprlib.Repr()  # Python 3.11's takes no arguments
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxset = 3, 6, 6, 6, 6
_SHORT.maxstring = _SHORT.maxlong = _SHORT.maxother = 80


def shown(value: Any, limit: int = 120) -> str:
    """A value's repr for a message, cut short.

    A declaration may be a stranger's, so a value in a message can be huge (an array of a
    million items in a config.json); the message stays a line.
    """
    return clip(_SHORT.repr(value), limit)


def clip(text: str, limit: int = 120) -> str:
    """`text` as it is when short, else its start and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
