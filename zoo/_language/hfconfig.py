"""How an entry maps to a transformers config: data in the entry's `transformers` table, no code per family.

    [hf_gpt2.transformers]
    model_type = "gpt2"                         # transformers' config.json `model_type`
    architectures = ["GPT2LMHeadModel"]         # the classes whose state-dict keys the entry has
    args = { n_embd = "n_embd", n_layer = "n_layer" }   # entry argument = config key (a list: the same names)
    fixed = { activation_function = "gelu_new" }        # config keys the entry implements as constants
    unset = ["n_inner"]                                  # config keys it does not implement: absent or null

zoo.save of a model built from such an entry writes these keys into config.json (the arguments'
values, the fixed values, null for `unset`), so transformers' `from_pretrained` reads it; and
zoo.load of a config.json that transformers wrote finds the entry by model_type and
architecture and builds it with the config's values. A key the config leaves out means
transformers' default, which the entry's defaults and fixed values must equal (the tests hold
every declared table to transformers' own config classes). No torch here, and no transformers:
zoo reads and writes its config.json as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoo._errors import SpecError, WeightsError, did_you_mean, listing

_FIELDS = ("model_type", "architectures", "args", "fixed", "unset")
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
        keys = [*args.values(), *fixed, *unset]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise SpecError(f"{where}: config key(s) {listing(twice)} appear more than once in args, fixed and unset")
        return cls(entry, model_type, tuple(architectures), args, dict(fixed), tuple(unset), where)

    def config(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The config.json keys for a model built with these argument `values` (the entry's, evaluated)."""
        out: dict[str, Any] = {"model_type": self.model_type, "architectures": list(self.architectures)}
        for arg, key in self.args.items():
            out[key] = values[arg]
        out.update(self.fixed)
        out.update(dict.fromkeys(self.unset))
        return out

    def overrides(self, config: Mapping[str, Any], file: str) -> dict[str, Any]:
        """The entry's arguments for a transformers config.json: its values for the mapped keys, checked.

        Raises:
            WeightsError: the config sets a value the entry does not implement, naming each.
        """
        problems = []
        for key, value in self.fixed.items():
            if key in config and config[key] is not None and config[key] != value:
                problems.append(f"{key} = {config[key]!r} (the entry implements {value!r} only)")
        for key in self.unset:
            if config.get(key) is not None:
                problems.append(f"{key} = {config[key]!r} (the entry implements none)")
        overrides = {}
        for arg, key in self.args.items():
            if key in config and config[key] is not None:
                value = config[key]
                if not isinstance(value, _SCALARS):
                    problems.append(f"{key} = {value!r} (the entry's argument '{arg}' takes a plain value)")
                overrides[arg] = value
        if problems:
            raise WeightsError(
                f"{file}: model_type '{self.model_type}' is zoo's '{self.entry}' ({self.where}), which cannot build "
                f"this config: {'; '.join(problems)}"
            )
        return overrides
