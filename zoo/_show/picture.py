"""`zoo show NAME --graph out.svg`: a resolved tree drawn as a dataflow picture.

resolved tree ─► Diagram (nodes, edges, nested blocks as boxes; shapes from one watched pass on
the meta device) ─► layered layout (networkx's topological generations, then ordering within a
layer) ─► matplotlib, written as .svg or .png; .dot is Graphviz text for those who have it.

networkx and matplotlib are the optional extra `zoo[graph]`, imported only when drawing: no
system Graphviz binary is needed.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._build import builder
from zoo._build.graph import StepError, run_steps
from zoo._build.lazy import check_shape
from zoo._errors import ArgumentError, MissingDependencyError, ZooError, did_you_mean, meta_limit
from zoo._files import fsio
from zoo._language.declarations import Const, Ref, Value, parse_declaration
from zoo._language.registry import USER, Origin, Provider, Registry
from zoo._language.resolve import Block, Graph, Resolution, Resolved, Step, Use, calls_children, graphs, resolve

FORMATS = (".svg", ".png", ".dot")
NODE_BUDGET = 40  # the default depth is the deepest whose picture has at most this many nodes (readable at a glance)
MAX_NODES = 1000  # a picture holds at most this many: laid out and rendered in about 15 s, an SVG of 1 MB
MAX_MEASURED = 5000  # modules whose shapes one meta pass finds (a Linear on meta takes about 2 ms)


@dataclass(frozen=True)
class Node:
    """One box of the picture."""

    id: str  # the dotted path in the model ("layer1.0.conv1", a parameter's key), or ".input.x", ".output"
    title: str  # the name as declared
    kind: str  # "input", "param" (a parameter or buffer), "block" (drawn whole), "op" or "output"
    type: str  # the block type or op name ("" for inputs and outputs)
    shape: str  # its output shape, "" when unknown
    box: str  # the id of the innermost expanded block around it ("" at the top)
    closed: bool = False  # a block drawn whole that a greater depth would open


@dataclass(frozen=True)
class Edge:
    """A value flowing from `src` to `dst`; `label` names a keyword or a tuple item it is passed as."""

    src: str
    dst: str
    label: str = ""


@dataclass
class Diagram:
    """What to draw: nodes in declaration order, edges, and the expanded blocks as labelled boxes."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    boxes: dict[str, str] = field(default_factory=dict)  # box id → label ("layer1.0: tv_basic_block")
    parents: dict[str, str] = field(default_factory=dict)  # box id → the box around it ("" at the top)
    depth: int = 1
    levels: int = 1  # the depth that opens every block
    input_shape: tuple[int, ...] | None = None
    note: str = ""  # why shapes are missing or stop, for the caption


def draw(
    target: str | nn.Module | Resolution,
    path: str | Path,
    *,
    input_shape: Sequence[int] | None = None,
    depth: int | None = None,
    registry: builder.RegistryArg = None,
    overrides: Mapping[str, Any] | None = None,
) -> Diagram:
    """Draw the dataflow of a declared entry, a Python block or a zoo-built model to `path`.

    Args:
        target: a name to resolve (`"tv_resnet18"`), a model zoo built or loaded (drawn from the
            declaration it carries), or a Resolution from zoo._language.resolve.
        path: the file to write; its extension picks the format: .svg, .png or .dot (Graphviz
            text, which needs no extra). Written whole or not at all.
        input_shape: the example input whose shapes label the nodes (default: the entry's `input`).
        depth: how many levels of nested blocks to open (1: the top block's children only;
            default: the deepest that keeps the picture to about 40 nodes).
        registry: extra registry file(s), as for zoo.build.
        overrides: values for the entry's `args`.

    Returns:
        The Diagram drawn: its nodes, edges and boxes.

    Raises:
        ArgumentError: an extension other than .svg, .png or .dot, a folder that is not there,
            a depth below 1, or a bad input shape.
        MissingDependencyError: .svg or .png without the `zoo[graph]` extra installed.
        UnknownNameError, SpecError, …: the name does not resolve (as `zoo check` reports it).
        ArgumentError: the picture would hold more than MAX_NODES nodes (a smaller depth or
            configuration draws); shapes are left out of a model of more than MAX_MEASURED blocks.

    Example:
        >>> zoo.draw("tv_resnet18", "resnet.svg", depth=3)
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ArgumentError(
            f"cannot draw to '{out}': the format comes from the extension, one of {', '.join(FORMATS)}."
            f"{did_you_mean(suffix, FORMATS)}"
        )
    if not out.parent.is_dir():
        raise ArgumentError(f"cannot draw to '{out}': there is no folder '{out.parent}'.")
    if depth is not None and depth < 1:
        raise ArgumentError(f"depth must be 1 or more (1 draws the top block's children), got {depth}.")
    if suffix != ".dot":
        _require_extra()
    resolution, name = _resolution(target, registry, overrides or {})
    assert resolution.root is not None
    shape = tuple(input_shape) if input_shape is not None else resolution.input_shape
    if shape is not None:
        shape = check_shape(shape)
    depth, levels = _depth(resolution.root, name, depth)  # first, so a picture too large costs no shape pass
    shapes = _Shapes.measure(resolution, shape)
    diagram = _Drawer(name, shapes, depth).draw(resolution.root)
    diagram.levels = levels
    diagram.input_shape = shape
    diagram.note = shapes.note
    try:
        if suffix == ".dot":
            with fsio.atomic_file(out) as f:
                f.write(to_dot(diagram).encode())
        else:
            _render(diagram, out, suffix[1:])
    except OSError as err:
        raise ArgumentError(f"cannot write '{out}': {err.strerror or err}.") from err
    return diagram


def _require_extra() -> None:
    try:
        import matplotlib  # noqa: F401
        import networkx  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f"drawing needs the optional extra 'graph' (networkx and matplotlib), which is not installed "
            f"({err}). Install it with: pip install 'zoo[graph]'; or write Graphviz text with a .dot file."
        ) from err


def _resolution(
    target: str | nn.Module | Resolution, registry: builder.RegistryArg, overrides: Mapping[str, Any]
) -> tuple[Resolution, str]:
    if overrides and not isinstance(target, str):
        raise ArgumentError("overrides apply to a name to resolve; a model or a resolution has its arguments already.")
    if isinstance(target, nn.Module):
        return _of_model(target, builder.registry_for(registry))
    if isinstance(target, Resolution):
        if target.errors:
            raise target.errors[0]
        if target.root is None:
            raise ArgumentError("the resolution has no tree to draw.")
        return target, _tree_type(target.root)
    reg = builder.registry_for(registry)
    resolution = resolve(reg, reg.resolve(target), overrides, target)
    if resolution.errors:
        raise resolution.errors[0]
    return resolution, target


def _of_model(model: nn.Module, reg: Registry) -> tuple[Resolution, str]:
    """The resolved declaration a zoo-built model carries (as config.json saves it)."""
    info = builder.build_info(model)
    if info is None:
        raise ArgumentError(
            f"cannot draw this {type(model).__name__}: zoo draws from a declaration, and this model was not built "
            "by zoo (it has no zoo_info). Draw the name it was built from, or build it with zoo.build."
        )
    entry = parse_declaration(info.name, info.declaration, f"<{info.name}: zoo_info>")
    resolution = resolve(reg, Provider(info.name, Origin(USER), entry=entry), {}, info.name)
    if resolution.errors:
        raise resolution.errors[0]
    resolution.input_shape = info.input_shape
    resolution.input_dtype = info.input_dtype
    return resolution, info.name


# --- shapes: one pass on the meta device -------------------------------------------------------


class _Shapes:
    """Output shapes by tree node (blocks) and by (dataflow block, step name) (ops)."""

    def __init__(self) -> None:
        self.of_module: dict[int, str] = {}  # id(module) → shape of its last output
        self.module_of: dict[int, nn.Module] = {}  # id(tree node) → its module
        self.of_step: dict[tuple[int, str], str] = {}
        self.input = ""  # the example input's shape
        self.note = ""
        self.path: dict[int, str] = {}  # id(module) → its dotted path, for the note
        self.running: list[str] = []  # what is running now, outermost first: the failing one is last

    def block(self, tree: Resolved) -> str:
        module = self.module_of.get(id(tree))
        return self.of_module.get(id(module), "") if module is not None else ""

    def step(self, graph: Graph, name: str) -> str:
        return self.of_step.get((id(graph), name), "")

    @classmethod
    def measure(cls, resolution: Resolution, input_shape: tuple[int, ...] | None) -> _Shapes:
        shapes = cls()
        if input_shape is None:
            shapes.note = "no example input: pass --input-shape for shapes"
            return shapes
        assert resolution.root is not None
        made: dict[int, nn.Module] = {}  # tree node → its module, to give each node its shape
        with torch.device("meta"):
            try:
                model = builder.construct(resolution.root, made)
            except ZooError as err:
                shapes.note = f"no shapes: the model cannot be built on the meta device ({err})"
                return shapes
            dtype = getattr(torch, resolution.input_dtype) if resolution.input_dtype else None
            x = torch.empty(input_shape, dtype=dtype)
        shapes.input = shape_text(x)
        shapes.module_of = made
        count = sum(1 for _ in model.modules())
        if count > MAX_MEASURED:
            shapes.note = f"no shapes: the model has {count:,} blocks, and one pass measures at most {MAX_MEASURED:,}"
            return shapes
        shapes.path = {id(m): f"{n} ({type(m).__name__})" if n else type(m).__name__ for n, m in model.named_modules()}
        dataflow = list(graphs(resolution.root))
        watched: list[Any] = []
        for module in {id(m): m for m in model.modules()}.values():
            watched.append(module.register_forward_pre_hook(shapes.enter))
            watched.append(module.register_forward_hook(shapes.leave))
        for graph in dataflow:
            # A dataflow block runs step by step here, so an op's output is seen as well as a child's.
            module = made[id(graph)]
            module.__dict__["forward"] = functools.partial(shapes.run_steps, graph, module)
        try:
            with torch.no_grad():
                model(x)
        except Exception as err:  # the picture still shows the shapes found before the failure
            failed = shapes.running[-1] if shapes.running else "the model"
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if isinstance(err, StepError):
                reason = err.message
                err = err.__cause__ if isinstance(err.__cause__, Exception) else err
            if meta_limit(err):
                shapes.note = f"shapes stop at {failed}, which cannot run on the meta device: {reason}"
            else:
                shapes.note = f"shapes stop at {failed}, where the input {list(input_shape)} fails: {reason}"
        finally:
            for handle in watched:
                handle.remove()
            for graph in dataflow:
                made[id(graph)].__dict__.pop("forward", None)
        return shapes

    def enter(self, module: nn.Module, _args: Any) -> None:
        self.running.append(self.path.get(id(module), type(module).__name__))

    def leave(self, module: nn.Module, _args: Any, output: Any) -> None:
        self.running.pop()
        self.of_module[id(module)] = shape_text(output)

    def run_steps(self, graph: Graph, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """What the compiled forward of `graph` computes, recording each step's output."""
        at = self.path.get(id(module), "").split(" (")[0]

        def seen(step: Step, result: Any) -> None:
            self.of_step[(id(graph), step.name)] = shape_text(result)

        try:
            return run_steps(graph, module, args, kwargs, seen)
        except StepError as err:  # an op's failure: name the op, as the hooks name a block
            step = err.step
            self.running.append(f"{name_path(at, step.name)} (op {step.op})" if step and step.op else at or "output")
            raise


def shape_text(value: Any) -> str:
    """`(1, 64, 56, 56)` for a tensor; tuples of them joined; the type name for anything else."""
    if isinstance(value, torch.Tensor):
        return "(" + ", ".join(str(d) for d in value.shape) + ")"
    if isinstance(value, (tuple, list)):
        return ", ".join(shape_text(v) for v in value)
    logits = getattr(value, "logits", None)
    return shape_text(logits) if isinstance(logits, torch.Tensor) else type(value).__name__


# --- the diagram: what to draw ------------------------------------------------------------------

_Value = list[tuple[str, str]]  # the nodes a value comes from, each with an edge label ("[0]" for an item)


def _tree_type(tree: Resolved) -> str:
    if isinstance(tree, Use):
        return f"@{tree.name} {_tree_type(tree.target)}"
    return tree.type if isinstance(tree, Block) else tree.name


def _opens(tree: Resolved) -> bool:
    """Whether the picture can show inside `tree`: a dataflow block, or a chain of children."""
    if isinstance(tree, Graph):
        return True
    return isinstance(tree, Block) and bool(tree.children) and calls_children(tree.provider)


def _levels(tree: Resolved) -> int:
    """How many levels of blocks can be opened below `tree`."""
    if isinstance(tree, Graph):
        inner = [s.block for s in tree.steps if s.block is not None]
    elif isinstance(tree, Block) and _opens(tree):
        inner = list(tree.children or ())
    else:
        return 0
    return 1 + max((_levels(b) for b in inner if _opens(b)), default=0)


def _depth(root: Resolved, name: str, depth: int | None) -> tuple[int, int]:
    """The depth to draw (`depth`, or the deepest within NODE_BUDGET) and the depth that opens every block.

    Raises:
        ArgumentError: the picture at that depth holds more than MAX_NODES nodes.
    """
    levels = max(1, _levels(root))
    if depth is None:
        depth = 1
        while depth < levels:
            try:
                _Drawer(name, _Shapes(), depth + 1, limit=NODE_BUDGET).draw(root)
            except _TooMany:
                break
            depth += 1
    try:
        _Drawer(name, _Shapes(), depth, limit=MAX_NODES).draw(root)
    except _TooMany:
        fewer = f"fewer levels (--depth {depth - 1}), " if depth > 1 else ""
        raise ArgumentError(
            f"cannot draw '{name}': at depth {depth} its picture holds more than {MAX_NODES:,} nodes, and a picture "
            f"holds at most that many (more is unreadable, and takes minutes to lay out). Draw {fewer}a smaller "
            "configuration (--set), or one of its blocks by name."
        ) from None
    return depth, levels


class _TooMany(Exception):
    """A drawing went past its node limit: drawing stops there."""


class _Drawer:
    def __init__(self, name: str, shapes: _Shapes, depth: int, limit: int | None = None) -> None:
        self.diagram = Diagram(name, depth=depth)
        self.shapes = shapes
        self.depth = depth
        self.limit = limit  # nodes at most; past it, _TooMany

    def draw(self, root: Resolved) -> Diagram:
        inputs = root.inputs if isinstance(root, Graph) else ("x",)
        feeds = []
        for index, name in enumerate(inputs):
            shape = self.shapes.input if index == 0 else ""
            node = self.node(f".input.{name}", name, "input", "", shape, "")
            feeds.append([(node.id, "")])
        if _opens(root):
            out = self.inside(root, "", 0, feeds, {}, "")
        else:
            out = self.whole(root, _tree_type(root), name_path("", _tree_type(root)), feeds, {}, "")
        # Ids starting with "." are no module's path, so no child can be mistaken for these.
        self.node(".output", "output", "output", "", self.shapes.block(root), "")
        for src, label in out:
            self.diagram.edges.append(Edge(src, ".output", label))
        return self.diagram

    def node(self, id: str, title: str, kind: str, type: str, shape: str, box: str, closed: bool = False) -> Node:
        node = Node(id, title, kind, type, shape, box, closed)
        self.diagram.nodes.append(node)
        if self.limit is not None and len(self.diagram.nodes) > self.limit:
            raise _TooMany()
        return node

    def connect(self, dst: str, args: Sequence[_Value], kwargs: Mapping[str, _Value]) -> None:
        for value in args:
            for src, label in value:
                self.diagram.edges.append(Edge(src, dst, label))
        for key, value in kwargs.items():
            for src, label in value:
                self.diagram.edges.append(Edge(src, dst, f"{key}{label}"))

    def place(
        self,
        tree: Resolved,
        title: str,
        path: str,
        level: int,
        args: Sequence[_Value],
        kwargs: Mapping[str, _Value],
        box: str,
    ) -> _Value:
        """Draw `tree` (a child called `title` at `path`) taking `args`; return where its output comes from."""
        if _opens(tree) and level < self.depth:
            self.diagram.boxes[path] = f"{path}: {_tree_type(tree)}"
            self.diagram.parents[path] = box
            return self.inside(tree, path, level, args, kwargs, path)
        return self.whole(tree, title, path, args, kwargs, box)

    def whole(
        self, tree: Resolved, title: str, path: str, args: Sequence[_Value], kwargs: Mapping[str, _Value], box: str
    ) -> _Value:
        node = self.node(path, title, "block", _tree_type(tree), self.shapes.block(tree), box, _opens(tree))
        self.connect(node.id, args, kwargs)
        return [(node.id, "")]

    def inside(
        self, tree: Resolved, path: str, level: int, args: Sequence[_Value], kwargs: Mapping[str, _Value], box: str
    ) -> _Value:
        if isinstance(tree, Block):  # a chain: each child takes the one before (and a Chain's other values)
            flow = list(args[0]) if args else []
            names = tree.child_names or tuple(str(i) for i in range(len(tree.children or ())))
            for name, child in zip(names, tree.children or (), strict=True):
                flow = self.place(child, name, name_path(path, name), level + 1, [flow, *args[1:]], kwargs, box)
            return flow
        assert isinstance(tree, Graph)
        values: dict[str, _Value] = {}
        for index, name in enumerate(tree.inputs):
            given = args[index] if index < len(args) else kwargs.get(name, [])
            values[name] = list(given)
        for name, dims in tree.params.items():
            node = self.node(name_path(path, name), name, "param", "parameter", _dims(dims), box)
            values[name] = [(node.id, "")]

        def value(ref: Value) -> _Value:
            if isinstance(ref, Const):
                return []  # a number written in `in`: no edge
            got = values[ref.name]
            if ref.item is None:
                return got
            if len(got) > 1 and isinstance(ref.item, int):
                return [got[ref.item]]
            index = str(ref)[len(ref.name) :]
            return [(src, f"{label}{index}") for src, label in got]

        for buffer in tree.buffers:  # computed at build, from earlier buffers
            name = buffer.step.name
            node = self.node(name_path(path, name), name, "param", "buffer", f"op {buffer.step.op}", box)
            self.connect(
                node.id, [value(r) for r in buffer.step.args], {k: value(r) for k, r in buffer.step.kwargs.items()}
            )
            values[name] = [(node.id, "")]
        for name, default in tree.defaults.items():  # drawn as the op it is when the caller gives none
            at = name_path(path, f"{name}.default")
            node = self.node(at, f"{name} (default)", "op", default.op or "", "", box)
            self.connect(node.id, [value(r) for r in default.args], {k: value(r) for k, r in default.kwargs.items()})
            values[name] = [*values[name], (node.id, "")]

        for step in tree.steps:
            step_args = [value(r) for r in step.args]
            step_kwargs = {k: value(r) for k, r in step.kwargs.items()}
            at = name_path(path, step.name)
            if step.block is None:
                node = self.node(at, step.name, "op", step.op or "", self.shapes.step(tree, step.name), box)
                self.connect(node.id, step_args, step_kwargs)
                values[step.name] = [(node.id, "")]
            else:
                values[step.name] = self.place(step.block, step.name, at, level + 1, step_args, step_kwargs, box)
        outs = (tree.out,) if isinstance(tree.out, Ref) else tree.out
        return [feed for ref in outs for feed in value(ref)]


def name_path(path: str, name: str) -> str:
    """The dotted path of `name` inside `path` (the module path a state-dict key starts with)."""
    return f"{path}.{name}" if path else name


def _dims(dims: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


# --- Graphviz text --------------------------------------------------------------------------------


def to_dot(diagram: Diagram) -> str:
    """The diagram as Graphviz DOT text (`dot -Tsvg`), with each expanded block as a cluster."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"digraph {quote(diagram.name)} {{", "  node [shape=box, fontname=Helvetica];"]
    inner: dict[str, list[str]] = {}
    for node in diagram.nodes:
        label = "\n".join(part for part in (_heading(node), node.shape) if part)
        shape = {"input": "oval", "output": "oval", "op": "ellipse", "param": "note"}.get(node.kind, "box")
        inner.setdefault(node.box, []).append(f"{quote(node.id)} [label={quote(label)}, shape={shape}];")

    def cluster(box: str, indent: str) -> None:
        for line in inner.get(box, []):
            lines.append(indent + line)
        for child, parent in diagram.parents.items():
            if parent == box:
                lines.append(f"{indent}subgraph {quote('cluster_' + child)} {{")
                lines.append(f"{indent}  label={quote(diagram.boxes[child])};")
                cluster(child, indent + "  ")
                lines.append(indent + "}")

    cluster("", "  ")
    for edge in diagram.edges:
        label = f" [label={quote(edge.label)}]" if edge.label else ""
        lines.append(f"  {quote(edge.src)} -> {quote(edge.dst)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _heading(node: Node) -> str:
    if not node.type or node.type == node.title or node.kind in ("input", "output"):
        return node.title
    return f"{node.title} · {node.type}"


# --- layout and rendering ------------------------------------------------------------------------

_FONT = 7.5  # points
_CHAR = _FONT * 0.62 / 72  # inches per character, DejaVu Sans at that size (a little generous)
_NODE_H = 0.38  # inches: two lines of text
_LAYER_GAP = 0.22  # inches between layers
_BOX_PAD = 0.09  # inches around the nodes of an expanded block
_BOX_LABEL = 0.17  # inches above them, for the box's label
_COLORS = {  # face, edge
    "input": ("#e3f4e1", "#4a9a45"),
    "output": ("#e3f4e1", "#4a9a45"),
    "block": ("#e6eef9", "#4a6fa5"),
    "op": ("#fff4d6", "#b38600"),
    "param": ("#f1e6f7", "#8250a0"),
}


@dataclass
class _Layout:
    x: dict[str, float]  # node id (and dummy points of long edges) → centre, inches
    y: dict[str, float]
    routes: list[tuple[Edge, list[str]]]  # each edge with the ids its line passes through
    width: float  # of a node, inches
    layer_of: dict[str, int]


def _layout(diagram: Diagram) -> _Layout:
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(n.id for n in diagram.nodes)
    graph.add_edges_from((e.src, e.dst) for e in diagram.edges)
    layer: dict[str, int] = {}
    for index, generation in enumerate(nx.topological_generations(graph)):
        for node in generation:
            layer[node] = index
    for node in diagram.nodes:  # a parameter sits just above where it is used, not at the very top
        if node.kind == "param" and graph.out_degree(node.id):
            layer[node.id] = min(layer[s] for s in graph.successors(node.id)) - 1

    # Edges longer than one layer pass through dummy points, so they bend around the boxes between.
    rows: dict[int, list[str]] = {}
    for node in diagram.nodes:
        rows.setdefault(layer[node.id], []).append(node.id)
    routes: list[tuple[Edge, list[str]]] = []
    below: dict[str, list[str]] = {}  # id → the ids one layer up that feed it (for ordering)
    for number, edge in enumerate(diagram.edges):
        chain = [edge.src]
        for depth in range(layer[edge.src] + 1, layer[edge.dst]):
            dummy = f"~{number}.{depth}"
            layer[dummy] = depth
            rows[depth].append(dummy)
            chain.append(dummy)
        chain.append(edge.dst)
        routes.append((edge, chain))
        for up, down in zip(chain, chain[1:], strict=False):
            below.setdefault(down, []).append(up)
    above: dict[str, list[str]] = {}
    for down, ups in below.items():
        for up in ups:
            above.setdefault(up, []).append(down)

    # Order each layer by the mean position of its neighbours (barycentres), down then up, a few times.
    order = {n: i for row in rows.values() for i, n in enumerate(row)}
    for sweep in range(4):
        numbers = sorted(rows) if sweep % 2 == 0 else sorted(rows, reverse=True)
        for number in numbers:
            near = below if sweep % 2 == 0 else above

            def key(n: str, near: dict[str, list[str]] = near) -> float:
                linked = near.get(n)
                return sum(order[m] for m in linked) / len(linked) if linked else order[n]

            rows[number].sort(key=key)
            order.update({n: i for i, n in enumerate(rows[number])})

    width = max(len(line) for n in diagram.nodes for line in (_heading(n), n.shape)) * _CHAR + 0.16
    width = max(width, 0.8)

    def nesting(box: str) -> int:
        return 0 if not box else 1 + nesting(diagram.parents.get(box, ""))

    # Room between neighbours for the frames of boxes side by side (parallel branches).
    step = width + 0.22 + 2 * _BOX_PAD * max((nesting(b) for b in diagram.boxes), default=0)
    x: dict[str, float] = {}
    for number in sorted(rows):  # each node under its feeders, pushed apart where they would overlap
        row = rows[number]
        wanted = []
        for n in row:
            feeders = [x[m] for m in below.get(n, []) if m in x]
            wanted.append(sum(feeders) / len(feeders) if feeders else 0.0)
        placed = _spread(wanted, [step if not n.startswith("~") else step * 0.5 for n in row])
        x.update(zip(row, placed, strict=True))

    # Layers further apart where expanded blocks open or close, to leave room for their boxes.
    opens = {n: 0 for n in rows}
    closes = {n: 0 for n in rows}
    for box in diagram.boxes:
        members = [layer[n.id] for n in diagram.nodes if n.box == box or n.box.startswith(box + ".")]
        if members:
            opens[min(members)] += 1
            closes[max(members)] += 1
    y: dict[str, float] = {}
    top = 0.0
    for number in sorted(rows):
        top -= opens[number] * (_BOX_PAD + _BOX_LABEL)
        for n in rows[number]:
            y[n] = top - _NODE_H / 2
        top -= _NODE_H + _LAYER_GAP + closes[number] * _BOX_PAD
    return _Layout(x, y, routes, width, layer)


def _spread(wanted: list[float], sizes: list[float]) -> list[float]:
    """Positions in the given order, as near `wanted` as they can be with neighbours `sizes` apart."""
    groups: list[tuple[int, int, float]] = []  # (first index, last index, centre of the first)
    for index, want in enumerate(wanted):
        groups.append((index, index, want))
        while len(groups) > 1:
            a0, a1, ax = groups[-2]
            b0, b1, bx = groups[-1]
            a_end = ax + sum(sizes[a0 + 1 : a1 + 1]) * 0.5 + sum(sizes[a0:a1]) * 0.5
            gap = (sizes[a1] + sizes[b0]) * 0.5
            if bx >= a_end + gap:
                break
            # Merge: the group's members keep their spacing, centred on the mean of what they want.
            offsets = [0.0]
            for i in range(a0 + 1, b1 + 1):
                offsets.append(offsets[-1] + (sizes[i - 1] + sizes[i]) * 0.5)
            mean = sum(wanted[a0 : b1 + 1]) / (b1 - a0 + 1) - sum(offsets) / len(offsets)
            groups[-2:] = [(a0, b1, mean)]
    placed = [0.0] * len(wanted)
    for first, last, start in groups:
        at = start
        for i in range(first, last + 1):
            if i > first:
                at += (sizes[i - 1] + sizes[i]) * 0.5
            placed[i] = at
    return placed


def _render(diagram: Diagram, out: Path, fmt: str) -> None:
    from matplotlib import patches, rc_context
    from matplotlib.figure import Figure
    from matplotlib.path import Path as Line

    lay = _layout(diagram)
    half_w, half_h = lay.width / 2, _NODE_H / 2
    nodes = {n.id: n for n in diagram.nodes}

    def nesting(box: str) -> int:
        return 0 if not box else 1 + nesting(diagram.parents.get(box, ""))

    # Boxes of expanded blocks: around their own nodes and the boxes inside them, innermost first,
    # each one padding wider (the room _layout left where boxes open and close).
    frames: dict[str, tuple[float, float, float, float]] = {}
    for box in sorted(diagram.boxes, key=nesting, reverse=True):
        parts = [
            (lay.x[n.id] - half_w, lay.x[n.id] + half_w, lay.y[n.id] - half_h, lay.y[n.id] + half_h)
            for n in diagram.nodes
            if n.box == box
        ]
        parts += [frames[b] for b, p in diagram.parents.items() if p == box and b in frames]
        if parts:
            frames[box] = (
                min(p[0] for p in parts) - _BOX_PAD,
                max(p[1] for p in parts) + _BOX_PAD,
                min(p[2] for p in parts) - _BOX_PAD,
                max(p[3] for p in parts) + _BOX_PAD + _BOX_LABEL,
            )
    bends = [lay.x[d] for _, chain in lay.routes for d in chain[1:-1]]
    xs = [lay.x[n] - half_w for n in nodes] + [f[0] for f in frames.values()] + bends
    xe = [lay.x[n] + half_w for n in nodes] + [f[1] for f in frames.values()] + bends
    ys = [lay.y[n] - half_h for n in nodes] + [f[2] for f in frames.values()]
    ye = [lay.y[n] + half_h for n in nodes] + [f[3] for f in frames.values()]
    margin = 0.15
    chars = max(48, int((max(xe) - min(xs)) / _CHAR))
    caption = textwrap.wrap(_caption(diagram), chars)
    left = min(xs) - margin
    right = max(max(xe), min(xs) + max(len(line) for line in caption) * _CHAR) + margin
    bottom, top = min(ys) - margin - 0.15 * len(caption) - 0.05, max(ye) + margin

    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "zoo", "font.size": _FONT}):
        fig = Figure(figsize=(right - left, top - bottom))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_axis_off()
        for box in sorted(frames, key=nesting):
            x0, x1, y0, y1 = frames[box]
            ax.add_patch(
                patches.FancyBboxPatch(
                    (x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.05",
                    facecolor="#000000", alpha=0.035 + 0.01 * nesting(box), edgecolor="#999999", linewidth=0.5,
                )
            )  # fmt: skip
            ax.text(x0 + 0.06, y1 - 0.04, diagram.boxes[box], ha="left", va="top", fontsize=_FONT - 0.5, color="#555")
        for edge, chain in lay.routes:
            src, dst = chain[0], chain[-1]
            points = [(lay.x[src], lay.y[src] - half_h)]
            points += [(lay.x[d], lay.y[d]) for d in chain[1:-1]]
            # Several values into one node arrive side by side, each on the side it comes from.
            last = points[-1][0]
            port = lay.x[dst] + max(-half_w / 2, min(half_w / 2, (last - lay.x[dst]) * 0.3))
            points.append((port, lay.y[dst] + half_h))
            ax.add_patch(
                patches.FancyArrowPatch(
                    path=Line(points), arrowstyle="-|>", mutation_scale=7, color="#555555", linewidth=0.7,
                    shrinkA=0, shrinkB=0,
                )
            )  # fmt: skip
            if edge.label:
                (ax_, ay_), (bx_, by_) = points[-2], points[-1]
                plate = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"}
                ax.text((ax_ + bx_) / 2, (ay_ + by_) / 2, edge.label, fontsize=_FONT - 1, bbox=plate, ha="center")
        for node in diagram.nodes:
            face, line = _COLORS[node.kind]
            face = "#cfdcf2" if node.closed else face  # darker: there is more inside (see --depth)
            style = "round,pad=0,rounding_size=0.17" if node.kind in ("input", "output", "op") else "square,pad=0"
            cx, cy = lay.x[node.id], lay.y[node.id]
            ax.add_patch(
                patches.FancyBboxPatch(
                    (cx - half_w, cy - half_h), lay.width, _NODE_H, boxstyle=style,
                    facecolor=face, edgecolor=line, linewidth=1.4 if node.closed else 0.8,
                )
            )  # fmt: skip
            if node.shape:
                ax.text(cx, cy + 0.07, _heading(node), ha="center", va="center", fontweight="bold")
                ax.text(cx, cy - 0.09, node.shape, ha="center", va="center", color="#444")
            else:
                ax.text(cx, cy, _heading(node), ha="center", va="center", fontweight="bold")
        ax.text(
            left + margin, bottom + 0.08, "\n".join(caption), ha="left", va="bottom", fontsize=_FONT - 0.5, color="#555"
        )
        with fsio.atomic_file(out) as f:
            fig.savefig(f, format=fmt, dpi=150, metadata={"Date": None} if fmt == "svg" else None)


def _caption(diagram: Diagram) -> str:
    parts = [diagram.name]
    if diagram.input_shape is not None:
        parts.append(f"input {list(diagram.input_shape)}")
    parts.append(f"depth {diagram.depth} of {diagram.levels}")
    if diagram.note:
        parts.append(diagram.note)
    return " · ".join(parts)
