"""How an entry maps to a transformers config: data in the entry's `transformers` table, no code per family.

    [hf_gpt2.transformers]
    model_type = "gpt2"                         # transformers' config.json `model_type`
    architectures = ["GPT2LMHeadModel"]         # the classes whose state-dict keys the entry has
    args = { n_embd = "n_embd", n_layer = "n_layer" }   # entry argument = config key (a list: the same names)
    fixed = { activation_function = "gelu_new" }        # config keys the entry implements as constants
    unset = ["n_inner"]                                  # config keys it does not implement: absent or null

A config key may be a path into a nested table of config.json: `rope_theta =
"rope_parameters.rope_theta"` (transformers 5 keeps Llama's RoPE settings under rope_parameters).
`renamed` says where older transformers versions put a key, so their config.json files load too:

    renamed = { rope_theta = "rope_parameters.rope_theta", rope_scaling = "rope_parameters" }

zoo.save of a model built from such an entry writes these keys into config.json (the arguments'
values, the fixed values, null for `unset`), so transformers' `from_pretrained` reads it; and
zoo.load of a config.json that transformers wrote finds the entry by model_type and
architecture and builds it with the config's values. A key the config leaves out means
transformers' default, which the entry's defaults and fixed values must equal (the tests hold
every declared table to transformers' own config classes). No torch here, and no transformers:
zoo reads and writes its config.json as JSON.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoo._errors import SpecError, WeightsError, did_you_mean, listing

_FIELDS = ("model_type", "architectures", "args", "fixed", "unset", "renamed")
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class TransformersMap:
    """One entry's mapping to a transformers config (`[entry.transformers]`), checked."""

    entry: str  # the entry that declares it
    model_type: str
    architectures: tuple[str, ...]
    args: Mapping[str, str]  # entry argument → config key
    fixed: Mapping[str, Any]  # config key → the value the entry implements
    unset: tuple[str, ...]  # config keys the entry does not implement: absent or null in a config it loads
    renamed: Mapping[str, str]  # an older transformers' config key → where the key lives now
    where: str  # file:line: entry -> transformers, for messages

    @classmethod
    def from_table(cls, entry: str, table: Mapping[str, Any], params: Mapping[str, Any], where: str) -> TransformersMap:
        """Check a `transformers` table against the entry's arguments (`params`).

        Raises:
            SpecError: an unknown key, a missing model_type or architectures, a value of the wrong
                kind, an argument the entry does not declare, or a config key given twice.
        """
        if not isinstance(table, Mapping):
            raise SpecError(f"{where} must be a table of {', '.join(_FIELDS)}, not {type(table).__name__}")
        for key in table:
            if key not in _FIELDS:
                raise SpecError(
                    f"{where}: unknown key '{key}'.{did_you_mean(str(key), _FIELDS)} It takes: {', '.join(_FIELDS)}."
                )
        model_type = table.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            raise SpecError(f'{where}: `model_type` must be transformers\' model type, a string such as "gpt2"')
        architectures = table.get("architectures")
        if (
            not isinstance(architectures, (list, tuple))
            or not architectures
            or not all(isinstance(a, str) and a for a in architectures)
        ):
            raise SpecError(f'{where}: `architectures` must list transformers classes, e.g. ["GPT2LMHeadModel"]')
        raw_args = table.get("args", {})
        if isinstance(raw_args, (list, tuple)) and all(isinstance(a, str) for a in raw_args):
            args = {a: a for a in raw_args}
        elif isinstance(raw_args, Mapping) and all(isinstance(v, str) for v in raw_args.values()):
            args = dict(raw_args)
        else:
            raise SpecError(f"{where}: `args` must map entry arguments to config keys, or list names the two share")
        unknown = [a for a in args if a not in params]
        if unknown:
            raise SpecError(
                f"{where}: `args` names {listing(unknown)}, which the entry does not declare in `args`."
                f"{did_you_mean(unknown[0], params)} It declares: {listing(params)}."
            )
        fixed = table.get("fixed", {})
        if not isinstance(fixed, Mapping) or not all(isinstance(v, _SCALARS) for v in fixed.values()):
            raise SpecError(f"{where}: `fixed` must map config keys to plain values (numbers, strings, booleans)")
        unset = table.get("unset", [])
        if not isinstance(unset, (list, tuple)) or not all(isinstance(k, str) for k in unset):
            raise SpecError(f"{where}: `unset` must list config keys")
        renamed = table.get("renamed", {})
        if not isinstance(renamed, Mapping) or not all(isinstance(v, str) and v for v in renamed.values()):
            raise SpecError(f"{where}: `renamed` must map an older config key to where it lives now, both strings")
        keys = [*args.values(), *fixed, *unset]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise SpecError(f"{where}: config key(s) {listing(twice)} appear more than once in args, fixed and unset")
        for key in [*keys, *renamed, *renamed.values()]:
            if any(not part for part in key.split(".")):
                raise SpecError(f"{where}: config key '{key}' has an empty part; a nested key reads 'table.key'")
        for key in keys:  # a key and a key inside it cannot both be given a value
            inside = [k for k in keys if k.startswith(key + ".")]
            if inside:
                raise SpecError(f"{where}: config key '{key}' is a table, since '{inside[0]}' is a key inside it")
        return cls(entry, model_type, tuple(architectures), args, dict(fixed), tuple(unset), dict(renamed), where)

    def config(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The config.json keys for a model built with these argument `values` (the entry's, evaluated)."""
        out: dict[str, Any] = {"model_type": self.model_type, "architectures": list(self.architectures)}
        for arg, key in self.args.items():
            _put(out, key, values[arg])
        for key, value in self.fixed.items():
            _put(out, key, value)
        for key in self.unset:
            _put(out, key, None)
        return out

    def overrides(self, config: Mapping[str, Any], file: str) -> dict[str, Any]:
        """The entry's arguments for a transformers config.json: its values for the mapped keys, checked.

        Raises:
            WeightsError: the config sets a value the entry does not implement, naming each.
        """
        problems = []
        config = self.current(config)
        for key, value in self.fixed.items():
            found = _get(config, key)
            if found is not None and found != value:
                problems.append(f"{key} = {found!r} (the entry implements {value!r} only)")
        for key in self.unset:
            found = _get(config, key)
            if found is not None:
                problems.append(f"{key} = {found!r} (the entry implements none)")
        overrides = {}
        for arg, key in self.args.items():
            value = _get(config, key)
            if value is not None:
                if not isinstance(value, _SCALARS):
                    problems.append(f"{key} = {value!r} (the entry's argument '{arg}' takes a plain value)")
                overrides[arg] = value
        if problems:
            raise WeightsError(
                f"{file}: model_type '{self.model_type}' is zoo's '{self.entry}' ({self.where}), which cannot build "
                f"this config: {'; '.join(problems)}"
            )
        return overrides

    def current(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with each key an older transformers wrote (`renamed`) where it lives now.

        A value already at the new place wins; two tables merge, the new one's keys first.
        """
        out = copy.deepcopy(dict(config))
        for old, new in self.renamed.items():
            value, now = _get(out, old), _get(out, new)
            if value is None:
                continue
            if now is None:
                _put(out, new, copy.deepcopy(value))
            elif isinstance(now, dict) and isinstance(value, Mapping):
                for key, inner in value.items():
                    now.setdefault(key, copy.deepcopy(inner))
        return out


def _get(config: Mapping[str, Any], key: str) -> Any:
    """The value at `key` ("a.b": b in table a), or None where the path is absent or runs through a non-table."""
    found: Any = config
    for part in key.split("."):
        if not isinstance(found, Mapping):
            return None
        found = found.get(part)
    return found


def _put(config: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` ("a.b": b in table a, made where absent) to value."""
    *tables, last = key.split(".")
    for part in tables:
        inner = config.get(part)
        if not isinstance(inner, dict):
            inner = config[part] = {}
        config = inner
    config[last] = value
