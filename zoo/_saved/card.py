"""The model card zoo.save writes as README.md: what the model is, its size, how to load it."""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from zoo._build import builder, devices
from zoo._errors import ZooError
from zoo._saved.config import CONFIG_FILE
from zoo._weights import layout

CARD_FILE = "README.md"
_CARD_MARK = "<!-- written by zoo.save: saving again replaces this file unless you delete this line -->"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


def not_ours(folder: Path, name: str) -> bool:
    """Files of a previous save that zoo did not write, to carry over into the new one (a card the user wrote too)."""
    if name == CARD_FILE:
        try:
            return _CARD_MARK not in (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return True
    return name not in (layout.MODEL_FILE, layout.INDEX_FILE, CONFIG_FILE) and not _SHARD.match(name)


def card_text(model: nn.Module, folder: Path, files: list[str]) -> str:
    info = builder.build_info(model)
    name = info.name if info is not None else type(model).__name__
    params = sum(p.numel() for p in model.parameters())  # each shared Parameter counted once
    stored = sum((folder / f).stat().st_size for f in files if f.endswith(".safetensors"))
    lines = [
        "---",
        "library_name: zoo",
        "tags:",
        "- zoo",
        "- pytorch",
        "- safetensors",
        "---",
        _CARD_MARK,
        "",
        f"# {name}",
        "",
    ]
    doc = _doc(name) if info is not None else ""
    if doc:
        lines += [doc, ""]
    weight_files = [f for f in files if f.endswith(".safetensors")]
    lines += [
        f"- Parameters: {params:,} (a shared parameter counted once)",
        f"- Weights: {len(weight_files)} safetensors file(s), {devices.human_bytes(stored)}",
    ]
    if info is not None:
        blocks = ", ".join(f"{block} ({origin})" for block, origin in sorted(info.provenance.items()))
        lines.append(f"- Blocks: {blocks}")
        if info.input_shape:
            lines.append(f"- Example input shape: {list(info.input_shape)}")
        lines += [
            "",
            "## Load it",
            "",
            "```python",
            "import zoo",
            "",
            'model = zoo.load("path/to/this/folder")  # rebuilt from config.json: no code of yours needed',
            "```",
        ]
        if info.transformers is not None:  # config.json carries transformers' keys too
            architecture = (list(info.transformers.get("architectures") or []) or ["AutoModel"])[0]
            lines += [
                "",
                "or with transformers:",
                "",
                "```python",
                f"from transformers import {architecture}",
                "",
                f'model = {architecture}.from_pretrained("path/to/this/folder")',
                "```",
            ]
    else:
        lines += [
            "",
            "## Load it",
            "",
            "The folder holds weights only (the model was not built by zoo): build the architecture in code, then",
            "",
            "```python",
            "import zoo",
            "",
            f"model = {name}(...)",
            'zoo.load_weights(model, "path/to/this/folder")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def _doc(name: str) -> str:
    try:
        entry = builder.entry_of(name)
    except ZooError:  # a name this process does not know: no doc line, the card is complete without it
        return ""
    return entry.doc if entry is not None else ""
