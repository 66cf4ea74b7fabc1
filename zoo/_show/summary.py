"""zoo.summary: a table of a model's modules — type, output shape, parameters, sharing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from zoo._build.shape_pass import trace


@dataclass(frozen=True)
class Row:
    """One module of the model."""

    name: str  # dotted path, "" for the model itself
    type: str
    output_shape: str  # "(2, 10)", "?" when traced but not reached, "" when not traced
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
    params_once_materialized: int | None = None  # for a lazy model traced at input_shape
    notes: tuple[str, ...] = ()  # how the shapes were found, when not by the meta pass

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Params", "Shared with")
        body = [
            (
                "  " * r.name.count(".") + (r.name.rsplit(".", 1)[-1] if r.name else "(model)"),
                r.type,
                r.output_shape,
                "?" if r.params is None else f"{r.params:,}",
                r.shared_with,
            )
            for r in self.rows
        ]
        widths = [max(len(str(line[i])) for line in (header, *body)) for i in range(len(header))]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), rule]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body]
        lines.append(rule)
        if self.total_params is None:
            line = f"Total params: ? ({self.known_params:,} known; the rest wait for materialisation)"
            if self.params_once_materialized is not None:
                line += f"; {self.params_once_materialized:,} once materialised for input {self.input_shape}"
            lines.append(line)
        else:
            lines.append(f"Total params: {self.total_params:,} (trainable {self.trainable_params:,})")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)


def summary(model: nn.Module, input_shape: Sequence[int] | None = None) -> Summary:
    """Tabulate `model`; with `input_shape`, each row also gets its output shape.

    The shapes come from one pass on the meta device (zero FLOPs, no memory), so a lazy
    model is neither materialised nor changed: its pending parameter counts show as `?`, and
    the footer gives the count it will have once materialised for `input_shape`. A model that
    cannot run on meta is traced by a real forward of a copy, and a note says which block
    needed it. Shared parameters are counted once.

    Raises:
        ArgumentError: `input_shape` is not a shape. ShapeError: the model rejects the input.

    Example:
        >>> print(zoo.summary(zoo.build("lazy_mlp"), input_shape=(2, 20)))
    """
    traced = trace(model, input_shape) if input_shape is not None else None
    shapes = traced.shapes if traced is not None else {}
    first_path: dict[int, str] = {}
    rows = []
    for name, module in model.named_modules(remove_duplicate=False):
        shared_with = first_path.setdefault(id(module), name)
        rows.append(
            Row(
                name=name,
                type=type(module).__name__,
                output_shape=_shape_text(shapes.get(name), traced is not None),
                params=_count(module.parameters()),
                shared_with=shared_with if shared_with != name else "",
            )
        )
    unique = list(model.parameters())  # parameters() yields each Parameter object once
    known = sum(p.numel() for p in unique if not isinstance(p, UninitializedParameter))
    total = _count(unique)
    return Summary(
        rows=tuple(rows),
        total_params=total,
        trainable_params=_count(p for p in unique if p.requires_grad),
        known_params=known,
        input_shape=tuple(input_shape) if input_shape is not None else None,
        params_once_materialized=traced.param_count if traced is not None and total is None else None,
        notes=(traced.notice,) if traced is not None and traced.notice else (),
    )


def _count(params: Iterable[nn.Parameter]) -> int | None:
    total = 0
    for p in params:
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
