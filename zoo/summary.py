"""zoo.summary: a table of a model's modules — type, output shape, parameters, sharing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter


@dataclass(frozen=True)
class Row:
    """One module of the model."""

    name: str  # dotted path, "" for the model itself
    type: str
    output_shape: str  # "(2, 10)", "?" before shapes are known, "" when not traced
    params: int | None  # None while some parameter is still lazy
    shared_with: str  # the first path of the same module object, or ""


@dataclass(frozen=True)
class Summary:
    """The table zoo.summary returns; str() renders it."""

    rows: tuple[Row, ...]
    total_params: int | None  # each shared parameter counted once; None while lazy
    trainable_params: int | None
    known_params: int  # what is countable already, lazy or not
    input_shape: tuple[int, ...] | None

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Params", "Shared with")
        body = [
            ("  " * r.name.count(".") + (r.name.rsplit(".", 1)[-1] if r.name else "(model)"), r.type,
             r.output_shape, "?" if r.params is None else f"{r.params:,}", r.shared_with)
            for r in self.rows
        ]
        widths = [max(len(str(line[i])) for line in (header, *body)) for i in range(len(header))]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), rule]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body]
        lines.append(rule)
        if self.total_params is None:
            lines.append(f"Total params: ? ({self.known_params:,} known; the rest wait for materialisation)")
        else:
            lines.append(f"Total params: {self.total_params:,} (trainable {self.trainable_params:,})")
        return "\n".join(lines)


def summary(model: nn.Module, input_shape: Sequence[int] | None = None) -> Summary:
    """Tabulate `model`. With `input_shape`, each row gets its output shape from one shape pass.

    The pass runs on the meta device where the model allows it (zero FLOPs, no memory), so a
    lazy model is neither materialised nor changed. Shared parameters are counted once.
    """
    from zoo import lazy

    shapes = lazy.trace_shapes(model, tuple(input_shape)) if input_shape is not None else {}
    first_path: dict[int, str] = {}
    rows = []
    for name, module in model.named_modules(remove_duplicate=False):
        shared_with = first_path.setdefault(id(module), name)
        rows.append(
            Row(
                name=name,
                type=type(module).__name__,
                output_shape=_shape_text(shapes.get(name), input_shape is not None),
                params=_count(module.parameters()),
                shared_with=shared_with if shared_with != name else "",
            )
        )
    unique = list(model.parameters())  # parameters() yields each Parameter object once
    known = sum(p.numel() for p in unique if not isinstance(p, UninitializedParameter))
    return Summary(
        rows=tuple(rows),
        total_params=_count(unique),
        trainable_params=_count(p for p in unique if p.requires_grad),
        known_params=known,
        input_shape=tuple(input_shape) if input_shape is not None else None,
    )


def _count(params: object) -> int | None:
    total = 0
    for p in params:  # type: ignore[attr-defined]
        if isinstance(p, UninitializedParameter):
            return None
        total += p.numel()
    return total


def _shape_text(shape: object, traced: bool) -> str:
    if isinstance(shape, torch.Size):
        return "(" + ", ".join(str(d) for d in shape) + ")"
    if isinstance(shape, (tuple, list)):
        return " ".join(_shape_text(s, traced) for s in shape)
    return "?" if traced else ""
