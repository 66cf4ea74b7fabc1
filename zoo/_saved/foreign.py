"""A config.json that transformers wrote: the installed entry that builds it, and with which arguments.

zoo.load of a folder (or a Hub repo's snapshot) reads zoo's record in config.json when there is
one. When there is none, but a `model_type` (transformers' save_pretrained), or when the record
is there but the weights are no longer the ones zoo saved with it (transformers rewrote the
folder and kept the record as a stale attribute), the model is built from the registry: the
entry whose `transformers` table declares that model_type and architecture, with the config's
values for its arguments (zoo._language.hfconfig). Nothing in the folder but config.json's
values and the safetensors weights is ever read: no code, no `auto_map`, no pickle.
"""

from __future__ import annotations

from zoo._errors import WeightsError, listing
from zoo._language.hfconfig import TransformersMap
from zoo._language.registry import Registry
from zoo._saved.config import SavedConfig, TransformersConfig


def declared(reg: Registry) -> list[TransformersMap]:
    """Every installed entry's transformers mapping, in name order (entries whose table is broken are left out:
    `zoo check` reports them)."""
    found = []
    for name in reg.names():
        if not any(p.entry is not None and p.entry.transformers is not None for p in reg.providers(name)):
            continue
        try:
            entry = reg.resolve(name).entry
            if entry is not None and entry.transformers is not None:
                where = f"{entry.transformers_loc or entry.loc}: {name} -> transformers"
                found.append(TransformersMap.from_table(name, entry.transformers, entry.params, where))
        except Exception:  # noqa: BLE001  (a clash or a broken table: that entry cannot be chosen)
            continue
    return found


def entry_for(config: TransformersConfig, reg: Registry, shown_as: str) -> TransformersMap:
    """The mapping of the entry that builds `config`: by model_type, then by its first architecture.

    Raises:
        WeightsError: no entry declares the model_type (naming the model_types zoo knows) or the
            architecture (naming those it knows for that model_type), or two entries do.
    """
    known = declared(reg)
    said = f"{config.file} says model_type '{config.model_type}'" + (
        f" ({', '.join(config.architectures)})" if config.architectures else ""
    )
    same_type = [m for m in known if m.model_type == config.model_type]
    if not same_type:
        types = sorted({f"{m.model_type} ({m.entry})" for m in known})
        text = (
            f"{said}, which no installed entry declares; zoo builds transformers models of model_type "
            f"{listing(types) if types else '(none)'}. Declare one with a `transformers` table on an entry "
            f"(README: Transformers folders), or load its weights into a model you build: "
        )
        raise WeightsError(text + _load_weights("NAME", shown_as), cli=text + _load_weights("NAME", shown_as, True))
    if config.architectures:
        matches = [m for m in same_type if config.architectures[0] in m.architectures]
        if not matches:
            known_here = sorted({f"{a} ({m.entry})" for m in same_type for a in m.architectures})
            text = (
                f"{said}; zoo builds model_type '{config.model_type}' as {listing(known_here)} only, whose "
                f"state-dict keys differ from {config.architectures[0]}'s. Load its weights into a model you build: "
            )
            raise WeightsError(text + _load_weights("NAME", shown_as), cli=text + _load_weights("NAME", shown_as, True))
    else:
        matches = same_type
    if len(matches) > 1:
        text = f"{said}, which several installed entries declare ({listing(m.entry for m in matches)}); use one: "
        entry = matches[0].entry
        raise WeightsError(text + _load_weights(entry, shown_as), cli=text + _load_weights(entry, shown_as, True))
    return matches[0]


def settle(
    config: SavedConfig | TransformersConfig, weights_save_id: str | None, reg: Registry, shown_as: str
) -> SavedConfig:
    """What to build for a folder: zoo's record when it goes with these weights, else the entry for transformers' keys.

    Raises:
        WeightsError: as for entry_for; or the config sets a value the entry does not implement.
    """
    if isinstance(config, SavedConfig):
        stale = config.transformers is not None and config.save_id is not None and weights_save_id is None
        if not stale:
            return config
        hf = config.transformers  # the weights are transformers' now: its keys say what the model is
        assert hf is not None
    else:
        hf = config
    mapping = entry_for(hf, reg, shown_as)
    overrides = mapping.overrides(hf.data, str(hf.file))
    return SavedConfig(
        mapping.entry, {}, None, {}, "?", None, transformers=hf, entry=mapping.entry, overrides=overrides
    )


def _load_weights(entry: str, source: str, cli: bool = False) -> str:
    return f"zoo load-weights {entry} {source}" if cli else f'zoo.load_weights(zoo.build("{entry}"), "{source}")'
