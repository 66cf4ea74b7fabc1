"""How a foreign checkpoint's keys map onto a model's own: prefix strip/add and regex renames.

timm's `checkpoint_filter_fn`, made declarative. A KeyMap is written in Python
(`zoo.load_weights(model, source, rename=...)`) or as a TOML-shaped table:

    { strip_prefix = "module.", add_prefix = "", rename = [["^blocks\\.(\\d+)", "h.\\1"]] }

and applies, to every key of the file, in this order: strip the prefix (keys without it stay
as they are), each rename in turn (`re.sub`, so `\\1` and `\\g<name>` refer to groups), add
the prefix. The result must be the model's state-dict key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoo._errors import SpecError, did_you_mean

_FIELDS = ("strip_prefix", "add_prefix", "rename")
_GROUP_REF = re.compile(r"\\(?:(\d+)|g<([^>]*)>)")


@dataclass(frozen=True)
class KeyMap:
    """File key → model key: strip a prefix, apply regex renames in order, add a prefix."""

    strip_prefix: str = ""  # removed from the keys that start with it ("module." of DataParallel saves)
    add_prefix: str = ""  # put before every key ("backbone." to load a backbone's weights into a larger model)
    rename: tuple[tuple[re.Pattern[str], str], ...] = ()  # (pattern, replacement), applied in order with re.sub

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "rename") -> KeyMap:
        """A KeyMap from its TOML-shaped table, every value checked.

        Args:
            table: `{strip_prefix = "...", add_prefix = "...", rename = [[pattern, replacement], ...]}`;
                every key optional.
            where: what to name in messages (a TOML entry's key path, say `gpt2 -> key_map`).

        Raises:
            SpecError: an unknown key, a value of the wrong type, a pattern that does not compile,
                or a replacement naming a group its pattern lacks.
        """
        if not isinstance(table, Mapping):
            raise SpecError(f"{where} must be a table of {', '.join(_FIELDS)}, not {type(table).__name__}")
        for key in table:
            if key not in _FIELDS:
                raise SpecError(
                    f"{where}: unknown key '{key}'.{did_you_mean(str(key), _FIELDS)} It takes: {', '.join(_FIELDS)}."
                )
        prefixes = {}
        for key in ("strip_prefix", "add_prefix"):
            value = table.get(key, "")
            if not isinstance(value, str):
                raise SpecError(f"{where} -> {key} must be a string, not {type(value).__name__} {value!r}")
            prefixes[key] = value
        rules = table.get("rename", ())
        if not isinstance(rules, Sequence) or isinstance(rules, str):
            raise SpecError(f"{where} -> rename must be a list of [pattern, replacement] pairs, not {rules!r}")
        return cls(
            prefixes["strip_prefix"],
            prefixes["add_prefix"],
            tuple(_rule(r, f"{where} -> rename[{i}]") for i, r in enumerate(rules)),
        )

    @classmethod
    def of(cls, value: KeyMap | Mapping[str, Any] | None, where: str = "rename") -> KeyMap | None:
        """`value` as a KeyMap: a KeyMap as it is, a table through from_table, None as None."""
        if value is None or isinstance(value, KeyMap):
            return value
        return cls.from_table(value, where)

    def __call__(self, key: str) -> str:
        """The model key for the file key `key`."""
        if self.strip_prefix and key.startswith(self.strip_prefix):
            key = key[len(self.strip_prefix) :]
        for pattern, replacement in self.rename:
            key = pattern.sub(replacement, key)
        return self.add_prefix + key

    def __bool__(self) -> bool:
        return bool(self.strip_prefix or self.add_prefix or self.rename)

    def describe(self) -> str:
        """The map as the table from_table reads, for messages."""
        parts = [f'{k} = "{getattr(self, k)}"' for k in ("strip_prefix", "add_prefix") if getattr(self, k)]
        if self.rename:
            parts.append("rename = [" + ", ".join(f'["{p.pattern}", "{r}"]' for p, r in self.rename) + "]")
        return "{ " + ", ".join(parts) + " }"


def _rule(rule: Any, where: str) -> tuple[re.Pattern[str], str]:
    if not (isinstance(rule, Sequence) and not isinstance(rule, str) and len(rule) == 2):
        raise SpecError(f"{where} must be a [pattern, replacement] pair of strings, not {rule!r}")
    pattern, replacement = rule
    if not isinstance(pattern, str) or not isinstance(replacement, str):
        raise SpecError(f"{where} must be a [pattern, replacement] pair of strings, not {rule!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise SpecError(f"{where}: the pattern {pattern!r} is not a regular expression: {err}") from None
    for number, name in _GROUP_REF.findall(replacement):
        if number and int(number) > compiled.groups:
            raise SpecError(
                f"{where}: the replacement {replacement!r} refers to group {number}, but {pattern!r} has "
                f"{compiled.groups} group(s)"
            )
        if name and not (name.isdigit() and int(name) <= compiled.groups) and name not in compiled.groupindex:
            raise SpecError(
                f"{where}: the replacement {replacement!r} refers to group '{name}', which {pattern!r} lacks"
            )
    return compiled, replacement
