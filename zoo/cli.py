"""The `zoo` command: a thin layer over the public API. Bad input → a message and exit 2.

Each handler imports what it needs when it runs, so `zoo --help`, `zoo --version`, a usage error
and `zoo list` never import torch (tests/test_cli.py checks it in fresh processes).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from zoo._version import __version__

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors also exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"zoo: error: {message}\n")


def _shape(text: str) -> tuple[int, ...]:
    parts = re.split(r"[,x]", text.strip())
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive sizes; write it as 2,20 (or 2x20)")
    return tuple(int(p) for p in parts)


def _setting(text: str) -> tuple[str, Any]:
    from zoo._language.declarations import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (for example hidden=512)")
    return key.strip(), parse_value(value.strip())


def _registry(args: argparse.Namespace) -> list[str] | None:
    return list(args.registry) if getattr(args, "registry", None) else None


def cmd_list(args: argparse.Namespace) -> int:
    from zoo._plugins import discovery

    reg = discovery.with_files(_registry(args) or ())  # names and declarations only: torch is not needed
    shown = []
    for name in reg.names(args.pattern):
        provider = reg.providers(name)[-1]
        if provider.entry is None and not (args.all or args.pattern):
            continue
        if provider.entry is not None and provider.entry.internal and not args.all:
            continue  # a helper template (`internal = true`)
        kind = "entry" if provider.entry is not None else "block"
        doc = provider.entry.doc if provider.entry is not None else ""
        shown.append((name, kind, str(provider.origin), doc))
    if not shown:
        print(f"no names match '{args.pattern}'" if args.pattern else "no entries declared")
        return 0
    width = max(len(n) for n, *_ in shown)
    for name, kind, origin, doc in shown:
        print(f"{name.ljust(width)}  {kind:5}  {origin:18}  {doc}".rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import zoo
    from zoo._language.declarations import dump_entry

    info = zoo.spec(args.name, registry=_registry(args), **dict(args.set))
    if args.graph:  # first: a picture that cannot be drawn is the command's error, before any output
        _draw(args)
    print(f"# {info.name}: {info.kind} from {info.origin}, defined at {info.source}")
    if info.doc:
        print(f"# {info.doc}")
    if info.params:
        print("# overridable: " + ", ".join(f"{k} = {v!r}" for k, v in info.params.items()))
    if info.input_shape:
        ids = f" of {info.input_dtype}" if info.input_dtype else ""
        print(f"# example input: {list(info.input_shape)}{ids}")
    print(dump_entry(info.name, info.declaration), end="")
    return 0


def _draw(args: argparse.Namespace) -> None:
    import zoo

    diagram = zoo.draw(
        args.name, args.graph, input_shape=args.input_shape, depth=args.depth, registry=_registry(args),
        overrides=dict(args.set),
    )  # fmt: skip
    more = f"; --depth {diagram.levels} opens every block" if diagram.depth < diagram.levels else ""
    print(f"# drew {len(diagram.nodes)} nodes (depth {diagram.depth} of {diagram.levels}{more}) to {args.graph}")
    if diagram.note:
        print(f"zoo: note: {diagram.note}", file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from zoo._build import builder, devices, lazy
    from zoo._errors import ZooError

    model = zoo.build(args.name, registry=_registry(args), input_shape=args.input_shape, **dict(args.set))
    info = builder.build_info(model)
    shape = args.input_shape or (info.input_shape if info else None)
    if shape is None:
        print(zoo.summary(model))
        raise ZooError(f"'{args.name}' declares no example `input`; pass one, e.g. --input-shape 2,20")
    shape = lazy.check_shape(shape, "--input-shape")
    dtype = builder.input_dtype(model) or torch.get_default_dtype()
    devices.check_allocation(shape, dtype, torch.device("cpu"), "a random input")
    torch.manual_seed(args.seed)
    X = builder.example_input(info, shape)
    model.eval()
    try:  # a wrong input shape fails inside torch: that is the user's input, not a zoo bug
        table = zoo.summary(model, input_shape=shape)
        with torch.no_grad():
            Y = model(X)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ZooError(f"forward of '{args.name}' on an input of shape {tuple(shape)} failed: {err}") from err
    print(table)
    print(f"input:  {tuple(X.shape)}")
    print(f"output: {_shape_of(Y)}")  # a block may return a tuple (`out = ["a", "b"]`, a chunk)
    print(Y)
    return 0


def _shape_of(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return str(tuple(shape))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shape_of(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return type(value).__name__


def cmd_check(args: argparse.Namespace) -> int:
    from zoo._build import builder, check
    from zoo._language.registry import USER

    files = [*args.files, *(args.registry or ())]  # `zoo check FILE` and `--registry FILE`, as show and build take it
    reg = builder.registry_for(files or None)
    advice: list[str] = []
    errors = check.check_registry(reg, origins={USER} if files else None, warnings=advice)
    checked = [n for n in reg.names() if any(p.entry is not None for p in reg.providers(n))]
    if files:
        checked = [n for n in checked if any(p.origin.dist == USER for p in reg.providers(n))]
    for line in advice:
        print(f"warning: {line}", file=sys.stderr)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s) in {len(checked)} entries", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"ok: {len(checked)} entries checked, no problems")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    import warnings

    from zoo._errors import ZooError, listing
    from zoo._language.registry import BUILTIN
    from zoo._plugins import discovery, hookspecs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table below says the same
        found = discovery.imported()  # LOAD counts what each plugin registered by import path, imported now
        registry = discovery.current()
    rows = [("PLUGIN", "DISTRIBUTION", "MODULE", "LOAD", "STATUS")]
    details: list[list[str]] = [[]]
    for r in found:
        status = f"failed: {r.error}" if r.status == "failed" else r.status
        status += f" by {discovery.DISABLE_ENV}" if r.status == "disabled" else ""
        load = f"{r.seconds * 1000:.1f} ms" if r.status != "disabled" else "-"
        rows.append((r.name, f"{r.dist} {r.version or ''}".strip(), r.module, load, status))
        kinds = (("blocks", r.blocks), ("entries", r.entries), ("init functions", r.inits), ("ops", r.ops))
        lines = [f"{len(names)} {kind}: {listing(names)}" for kind, names in kinds if names]
        details.append(lines + [f"note: {note}" for note in r.notes])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row, lines in zip(rows, details, strict=True):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4])
        for line in lines:
            print(" " * (widths[0] + 2) + line)
    if not any(r.dist != BUILTIN for r in found):
        print(f"no third-party plugins installed (entry-point group '{hookspecs.ENTRY_POINT_GROUP}')")
    for problem in discovery.disable_problems():
        print(f"note: {problem}")
    for name in registry.clashes():
        try:
            registry.resolve(name)
        except ZooError as err:  # an error only where the name is used; shown here so it is no surprise
            print(f"clash: {err}")
    return 0


def _budget(text: str) -> tuple[str, str]:
    device, sep, size = text.partition("=")
    if not sep or not device.strip() or not size.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not DEVICE=SIZE (for example cuda:0=8GiB)")
    _size(size.strip(), zero=True)  # a bad size is the flag's error, in the flag's words
    return device.strip(), size.strip()


def _size(text: str, *, zero: bool = False) -> str:
    from zoo._build import devices
    from zoo._errors import ZooError

    try:
        devices.parse_size(text, "size", zero=zero)
    except ZooError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("size: ")) from None
    return text


def _dtype(text: str) -> Any:
    import torch

    dtype = getattr(torch, text.strip().removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise argparse.ArgumentTypeError(f"'{text}' is not a floating-point dtype; write float16, bfloat16 or float32")
    return dtype


def cmd_save(args: argparse.Namespace) -> int:
    import zoo
    from zoo._build import lazy
    from zoo._build.devices import human_bytes
    from zoo._errors import ZooError

    model = zoo.build(args.name, registry=_registry(args), input_shape=args.input_shape, **dict(args.set))
    if lazy.is_lazy(model):  # the API's message names zoo.materialize; at the CLI the answer is a flag
        raise ZooError(
            f"'{args.name}' declares no example `input`, so its shapes are unknown; pass one, e.g. --input-shape 2,20"
        )
    folder = zoo.save(model, args.dir, max_shard_size=args.max_shard_size, dtype=args.dtype)
    print(f"saved '{args.name}' to {folder}/")
    for file in sorted(folder.iterdir()):
        if file.is_file():
            print(f"  {file.name}  {human_bytes(file.stat().st_size)}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    import zoo
    from zoo._build import builder

    model = zoo.load(
        args.dir, device=args.device, dtype=args.dtype, strict=not args.non_strict, registry=_registry(args)
    )
    info = builder.build_info(model)
    assert info is not None  # zoo.load rebuilds through the builder, which records it
    print(f"loaded '{info.name}' from {args.dir}")
    report = getattr(model, "zoo_load_report", None)
    if report is not None and report.converted:
        print(report.conversions() + " (--dtype)")
    if report:
        print("did not fit (not loaded):\n" + report.describe())
    print(zoo.summary(model, input_shape=info.input_shape))
    return 0


def cmd_load_weights(args: argparse.Namespace) -> int:
    import zoo
    from zoo._build import builder

    model = zoo.build(args.name, registry=_registry(args), dtype=args.dtype, **dict(args.set))
    rename = {"strip_prefix": args.strip_prefix, "add_prefix": args.add_prefix, "rename": args.rename}
    report = zoo.load_weights(
        model, args.source, strict=not args.non_strict, rename=rename if any(rename.values()) else None,
        revision=args.revision, cache_dir=args.cache_dir, local_files_only=args.offline, endpoint=args.endpoint,
    )  # fmt: skip
    print(f"loaded {args.source} into '{args.name}'")
    if report.tied:
        print("through ties in the model: " + ", ".join(f"{k} (tied to {v})" for k, v in report.tied.items()))
    if report.converted:
        print(report.conversions() + " (the model's dtype; --dtype builds it in another)")
    if report:
        print("did not fit (not loaded):\n" + report.describe())
    info = builder.build_info(model)
    print(zoo.summary(model, input_shape=info.input_shape if info else None))
    return 0


def _rename_rule(text: str) -> list[str]:
    pattern, sep, replacement = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected REGEX=REPLACEMENT, got '{text}'")
    return [pattern, replacement]


def cmd_inspect(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from zoo._build.devices import human_bytes
    from zoo._saved.config import CONFIG_FILE, TransformersConfig, read_config
    from zoo._weights import reader

    path = Path(args.path)
    config = read_config(path) if path.is_dir() else None
    hf = config if isinstance(config, TransformersConfig) else config.transformers if config is not None else None
    if hf is not None:
        written = "with zoo's record" if config is not hf else "by transformers"
        print(f"{path / CONFIG_FILE}: model_type '{hf.model_type}' ({', '.join(hf.architectures)}), {written}")
    if config is not None and not isinstance(config, TransformersConfig):
        print(f"{path / CONFIG_FILE}: '{config.name}', saved by zoo {config.zoo_version}")
        if config.input_shape:
            print(f"  example input: {list(config.input_shape)}")
        for block, origin in sorted(config.provenance.items()):
            print(f"  block {block} from {origin}")
    for header in reader.inspect(path):
        total = sum(info.nbytes for info in header.tensors)
        print(f"{header.file}: {len(header.tensors)} tensor(s), {human_bytes(total)}")
        for key, value in sorted(header.metadata.items()):
            text = value if len(value) <= 200 else value[:200] + f"… ({len(value)} characters)"
            print(f"  metadata {key} = {text}")
        rows = sorted(
            (info.key, str(info.dtype).removeprefix("torch."), json.dumps(list(info.shape)), human_bytes(info.nbytes))
            for info in header.tensors
        )
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    import zoo
    from zoo._build import devices

    rows = [("DEVICE", "NAME", "TOTAL", "FREE")]
    for info in devices.inventory():
        rows.append((info.device, info.name, devices.human_bytes(info.total), devices.human_bytes(info.free)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3])
    if args.plan:
        print()
        budgets = dict(args.max_memory) if args.max_memory else None
        print(
            zoo.plan(
                args.plan, device_map=args.device_map, max_memory=budgets, input_shape=args.input_shape,
                registry=_registry(args),
            )
        )  # fmt: skip
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    import zoo
    from zoo._errors import ZooError

    source: Any = Path(args.source)
    if not (source.is_dir() or os.sep in args.source or args.source.startswith(".")):  # a name to build
        torch.manual_seed(args.seed)  # the same name and seed push the same bytes: nothing new is uploaded
        source = zoo.build(args.source, registry=_registry(args), input_shape=args.input_shape, **dict(args.set))
    elif args.set or args.input_shape:
        raise ZooError(f"--set and --input-shape apply to a name to build; '{args.source}' is a folder")
    url = zoo.push(
        source, args.repo_id, branch=args.branch, private=args.private, commit_message=args.message,
        create_pr=args.create_pr, max_shard_size=args.max_shard_size, endpoint=args.endpoint,
    )  # fmt: skip
    print(f"pushed '{args.source}' to {args.repo_id}: {url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    import zoo
    from zoo._build import builder
    from zoo._hub import client

    if args.dir:
        client.check_copy_target(args.dir, args.repo_id)  # before any download
    model = zoo.pull(
        args.repo_id, revision=args.revision, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir,
        local_files_only=args.offline, endpoint=args.endpoint, strict=not args.non_strict,
    )  # fmt: skip
    source, info = client.source_of(model), builder.build_info(model)
    assert source is not None and info is not None  # pull records both
    print(f"pulled {source.repo_id}@{source.revision} (commit {source.commit}) from {source.endpoint}")
    if args.dir:
        snapshot = client.fetch(source.repo_id, revision=source.commit, cache_dir=args.cache_dir, local_files_only=True)
        client.copy_snapshot(snapshot, args.dir)
        print(f"copied its files to {args.dir} (load them with: zoo load {args.dir})")
    print(zoo.summary(model, input_shape=info.input_shape))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="A declarative model zoo for PyTorch.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def with_registry(p: argparse.ArgumentParser) -> None:
        p.add_argument("--registry", action="append", metavar="FILE", help="extra registry TOML (repeatable)")

    p = command("list", cmd_list, "List declared entries (and Python blocks with --all or a pattern).")
    p.add_argument("pattern", nargs="?", help="glob, e.g. '*mlp*'")
    p.add_argument("--all", action="store_true", help="include Python blocks and internal helper entries")
    with_registry(p)

    p = command("show", cmd_show, "Show a name's resolved declaration and where it came from.")
    p.add_argument("name")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    p.add_argument("--graph", metavar="FILE", help="also draw its dataflow to FILE: .svg, .png (zoo[graph]) or .dot")
    p.add_argument("--depth", type=int, metavar="N", help="with --graph: levels of nested blocks to open")
    p.add_argument("--input-shape", type=_shape, metavar="2,20", help="with --graph: the input the shapes are for")
    with_registry(p)

    p = command("build", cmd_build, "Build a model, print its summary and run one forward on random input.")
    p.add_argument("name")
    p.add_argument("--input-shape", type=_shape, metavar="2,20")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    with_registry(p)

    p = command(
        "check",
        cmd_check,
        "Check registry files (default: everything installed) without building: each entry is resolved, "
        "constructed on the meta device (no memory) and run on its declared `input` there. What check passes, "
        "zoo build builds: an entry with an `input` that zoo build would refuse, zoo check refuses.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="registry TOML files to check (their entries only)")
    with_registry(p)

    command("plugins", cmd_plugins, "List installed plugins: version, what they provide, load time, status.")

    p = command("save", cmd_save, "Build a model (materialised), then save it to a folder: weights, config.json, card.")
    p.add_argument("name")
    p.add_argument("dir")
    p.add_argument("--input-shape", type=_shape, metavar="2,20", help="materialise lazy layers for this input")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    p.add_argument("--max-shard-size", type=_size, metavar="SIZE", help="split the weights into shards, e.g. 2GB")
    p.add_argument("--dtype", type=_dtype, help="store floating-point tensors as float16, bfloat16, …")
    with_registry(p)

    p = command(
        "load", cmd_load, "Load a folder written by `zoo save` or transformers (no code) and print its summary."
    )
    p.add_argument("dir")
    p.add_argument("--device", help="cpu (default), cuda:0, auto")
    p.add_argument("--dtype", type=_dtype, help="convert floating-point tensors to float16, bfloat16, …")
    p.add_argument("--non-strict", action="store_true", help="load what fits and list the rest, instead of failing")
    with_registry(p)

    p = command(
        "load-weights",
        cmd_load_weights,
        "Build NAME and load safetensors weights into it from a file, a folder or hf://org/name[@rev] (any writer).",
    )
    p.add_argument("name")
    p.add_argument("source", metavar="SOURCE", help="a .safetensors file, a folder, or hf://org/name[@revision]")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    p.add_argument("--non-strict", action="store_true", help="load what fits and list the rest, instead of failing")
    p.add_argument("--dtype", type=_dtype, help="build NAME in float16, bfloat16, … (default float32; the output "
                   "says which tensors were converted)")  # fmt: skip
    p.add_argument("--strip-prefix", default="", help="remove this prefix from the file's keys (e.g. 'module.')")
    p.add_argument("--add-prefix", default="", help="put this prefix before the file's keys")
    p.add_argument("--rename", action="append", type=_rename_rule, default=[], metavar="REGEX=REPLACEMENT",
                   help="rename the file's keys with re.sub, in order (repeatable)")  # fmt: skip
    p.add_argument("--revision", help="for hf:// sources: a branch, tag or full commit id")
    p.add_argument("--cache-dir", help="for hf:// sources; default: HF_HUB_CACHE")
    p.add_argument("--offline", action="store_true", help="for hf:// sources: the cache only, no request")
    p.add_argument("--endpoint", help="for hf:// sources: a Hub-compatible server; default HF_ENDPOINT")
    with_registry(p)

    p = command("inspect", cmd_inspect, "Show the keys, dtypes, shapes and metadata of a safetensors file or folder.")
    p.add_argument("path", metavar="FILE_OR_DIR")

    p = command("devices", cmd_devices, "List devices with their total and free memory; --plan NAME places a model.")
    p.add_argument("--plan", metavar="NAME", help="print where each block of NAME would go (nothing is allocated)")
    p.add_argument("--device-map", default="auto", choices=["auto", "balanced"])
    p.add_argument(
        "--max-memory", action="append", type=_budget, metavar="DEVICE=SIZE", help="e.g. cuda:0=8GiB (repeatable)"
    )
    p.add_argument("--input-shape", type=_shape, metavar="2,20", help="with --plan: one input batch (lazy layers)")
    with_registry(p)

    endpoint_help = "a Hub-compatible server (default: HF_ENDPOINT, else huggingface.co)"
    p = command("push", cmd_push, "Upload a model to a Hub repo: a folder written by `zoo save`, or a name to build.")
    p.add_argument("source", metavar="DIR_OR_NAME")
    p.add_argument("repo_id", metavar="REPO_ID", help="org/name")
    p.add_argument("--branch", help="commit to this branch (created if missing); default main")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", help="the commit message")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    p.add_argument("--max-shard-size", type=_size, metavar="SIZE", help="split the weights into shards, e.g. 2GB")
    p.add_argument("--input-shape", type=_shape, metavar="2,20", help="materialise lazy layers for this input")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights of a built name")
    p.add_argument("--endpoint", help=endpoint_help)
    with_registry(p)

    p = command(
        "pull", cmd_pull, "Fetch a model from a Hub repo (a declaration and safetensors, never code) and load it."
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="org/name, org/name@revision or hf://org/name@revision")
    p.add_argument("dir", nargs="?", metavar="DIR", help="also copy its files to this new folder")
    p.add_argument("--revision", help="a branch, tag or full commit id; default main")
    p.add_argument("--device", help="cpu (default), cuda:0, auto")
    p.add_argument("--dtype", type=_dtype, help="convert floating-point tensors to float16, bfloat16, …")
    p.add_argument("--cache-dir", help="default: HF_HUB_CACHE (~/.cache/huggingface/hub)")
    p.add_argument("--offline", action="store_true", help="use the cache only, send no request (as HF_HUB_OFFLINE=1)")
    p.add_argument("--non-strict", action="store_true", help="load what fits and list the rest, instead of failing")
    p.add_argument("--endpoint", help=endpoint_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings as one line for people (zoo's are written for users), not Python's source excerpt."""
    text = str(message)
    print(f"zoo: warning: {text.removeprefix('zoo: ')}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from zoo._errors import ZooError

    try:
        return int(args.handler(args))
    except ZooError as err:
        print(f"zoo: error: {err.for_cli()}", file=sys.stderr)  # flags and commands, not keyword arguments
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `zoo show NAME | head`: the reader has what it wanted
        # Python would complain again while flushing stdout at exit; point it at nothing instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug in zoo or a plugin: say so in one line unless debugging
        if os.environ.get("ZOO_DEBUG"):
            raise
        print(f"zoo: internal error: {type(err).__name__}: {err} (set ZOO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
