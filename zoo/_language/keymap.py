"""How a foreign checkpoint's keys map onto a model's own: prefix strip/add and regex renames.

timm's `checkpoint_filter_fn`, made declarative. A KeyMap is written in Python
(`zoo.load_weights(model, source, rename=...)`) or as a TOML-shaped table:

    { strip_prefix = "module.", add_prefix = "", rename = [["^blocks\\.(\\d+)", "h.\\1"]] }

and applies, to every key of the file, in this order: strip the prefix (keys without it stay
as they are), each rename in turn (as `re.sub`, so `\\1` and `\\g<name>` refer to groups), add
the prefix. The result must be the model's state-dict key.

The patterns of a table come from declarations, which may be a stranger's, and the keys from a
weights file, so they are matched by RE2 (the google-re2 package), whose time is linear in the
key whatever the pattern: `^(a+)+$` cannot backtrack for ever on `aaaa…!`. RE2 takes Python's
syntax but for backreferences and lookarounds (a pattern with them is refused, naming it), and
its `\\w` and `\\d` are ASCII, as state-dict keys are. Refusing nested quantifiers instead would
let `(a|a)+$` and `a*a*a*a*b` through and refuse harmless patterns: the matcher is the fix.
RE2's time is also proportional to the pattern's compiled size, so that is bounded too
(`MAX_PROGRAM`: `(b*){1000}` is refused), and so is the key: one longer than `MAX_KEY`
characters is no state-dict key anyone declares, and the renames leave it as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import re2

from zoo._errors import SpecError, did_you_mean, shown

_FIELDS = ("strip_prefix", "add_prefix", "rename")
_GROUP_REF = re.compile(r"\\(?:(\d+)|g<([^>]*)>)")
MAX_PROGRAM = 500  # RE2 instructions in one pattern; a prefix rename takes about 10, GPT-2's longest 33
MAX_KEY = 1000  # characters of a key the renames read
_RE2 = re2.Options()
_RE2.log_errors = False  # RE2 would print each refused pattern to stderr itself; zoo says it once


class Pattern(Protocol):
    """A compiled pattern: RE2's (linear time) from a table, or `re`'s when Python code passes one."""

    @property
    def pattern(self) -> str: ...

    @property
    def groups(self) -> int: ...

    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def finditer(self, string: str) -> Iterator[Any]: ...


@dataclass(frozen=True)
class KeyMap:
    """File key → model key: strip a prefix, apply regex renames in order, add a prefix."""

    strip_prefix: str = ""  # removed from the keys that start with it ("module." of DataParallel saves)
    add_prefix: str = ""  # put before every key ("backbone." to load a backbone's weights into a larger model)
    rename: tuple[tuple[Pattern, str], ...] = ()  # (pattern, replacement), applied in order as re.sub does

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
                raise SpecError(f"{where} -> {key} must be a string, not {type(value).__name__} {shown(value)}")
            prefixes[key] = value
        rules = table.get("rename", ())
        if not isinstance(rules, Sequence) or isinstance(rules, str):
            raise SpecError(f"{where} -> rename must be a list of [pattern, replacement] pairs, not {shown(rules)}")
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
            if len(key) > MAX_KEY:
                break
            key = _substitute(pattern, replacement, key)
        return self.add_prefix + key

    def __bool__(self) -> bool:
        return bool(self.strip_prefix or self.add_prefix or self.rename)

    def describe(self) -> str:
        """The map as the table from_table reads, for messages."""
        parts = [f'{k} = "{getattr(self, k)}"' for k in ("strip_prefix", "add_prefix") if getattr(self, k)]
        if self.rename:
            parts.append("rename = [" + ", ".join(f'["{p.pattern}", "{r}"]' for p, r in self.rename) + "]")
        return "{ " + ", ".join(parts) + " }"


def _substitute(pattern: Pattern, replacement: str, key: str) -> str:
    """`re.sub(pattern, replacement, key)`, by the pattern's own matcher."""
    pieces: list[str] = []
    end, last = 0, None
    for match in pattern.finditer(key):
        span = match.span()
        if span == last:  # google-re2's finditer gives an empty match at the very end twice
            continue
        last = span
        pieces.append(key[end : span[0]])
        pieces.append(match.expand(replacement))
        end = span[1]
    pieces.append(key[end:])
    return "".join(pieces)


def _rule(rule: Any, where: str) -> tuple[Pattern, str]:
    if not (isinstance(rule, Sequence) and not isinstance(rule, str) and len(rule) == 2):
        raise SpecError(f"{where} must be a [pattern, replacement] pair of strings, not {shown(rule)}")
    pattern, replacement = rule
    if not isinstance(pattern, str) or not isinstance(replacement, str):
        raise SpecError(f"{where} must be a [pattern, replacement] pair of strings, not {shown(rule)}")
    try:
        compiled: Pattern = re2.compile(pattern, _RE2)
    except re2.error as err:
        why = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        raise SpecError(
            f"{where}: the pattern {shown(pattern)} is not a regular expression zoo matches (RE2's syntax: "
            f"Python's, without backreferences or lookarounds): {why}"
        ) from None
    size = getattr(compiled, "programsize", 0)
    if size > MAX_PROGRAM:
        raise SpecError(
            f"{where}: the pattern {shown(pattern)} compiles to {size} instructions, more than the {MAX_PROGRAM} zoo "
            "matches quickly; write it shorter (a counted repetition such as {1000} is written out in full)"
        )
    said, says = shown(pattern), shown(replacement)
    for number, name in _GROUP_REF.findall(replacement):
        if number and int(number) > compiled.groups:
            raise SpecError(
                f"{where}: the replacement {says} refers to group {number}, but {said} has {compiled.groups} group(s)"
            )
        if name and not (name.isdigit() and int(name) <= compiled.groups) and name not in compiled.groupindex:
            raise SpecError(f"{where}: the replacement {says} refers to group '{name}', which {said} lacks")
    return compiled, replacement
