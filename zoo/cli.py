"""The `zoo` command: a thin layer over the public API. Bad input → a message and exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors also exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"zoo: error: {message}\n")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape; write it as 2,20") from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive sizes; write it as 2,20")
    return shape


def _setting(text: str) -> tuple[str, Any]:
    from zoo.spec import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (for example hidden=512)")
    return key.strip(), parse_value(value.strip())


def _registry(args: argparse.Namespace) -> list[str] | None:
    return list(args.registry) if getattr(args, "registry", None) else None


def cmd_list(args: argparse.Namespace) -> int:
    import zoo
    from zoo import builder

    reg = builder.registry_for(_registry(args))
    shown = []
    for name in zoo.names(args.pattern, registry=reg):
        provider = reg.providers(name)[-1]
        if provider.entry is None and not (args.all or args.pattern):
            continue
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
    from zoo.spec import dump_entry

    info = zoo.spec(args.name, registry=_registry(args), **dict(args.set))
    print(f"# {info.name}: {info.kind} from {info.origin}, defined at {info.source}")
    if info.doc:
        print(f"# {info.doc}")
    if info.params:
        print("# overridable: " + ", ".join(f"{k} = {v!r}" for k, v in info.params.items()))
    if info.input_shape:
        print(f"# example input: {list(info.input_shape)}")
    print(dump_entry(info.name, info.declaration), end="")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from zoo import builder
    from zoo.errors import ZooError

    model = zoo.build(args.name, registry=_registry(args), input_shape=args.input_shape, **dict(args.set))
    info = builder.build_info(model)
    shape = args.input_shape or (info.input_shape if info else None)
    if shape is None:
        print(zoo.summary(model))
        raise ZooError(f"'{args.name}' declares no example `input`; pass one, e.g. --input-shape 2,20")
    torch.manual_seed(args.seed)
    X = torch.rand(shape)
    model.eval()
    try:  # a wrong input shape fails inside torch: that is the user's input, not a zoo bug
        table = zoo.summary(model, input_shape=shape)
        with torch.no_grad():
            Y = model(X)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ZooError(f"forward of '{args.name}' on an input of shape {tuple(shape)} failed: {err}") from err
    print(table)
    print(f"input:  {tuple(X.shape)}")
    print(f"output: {tuple(Y.shape)}")
    print(Y)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from zoo import builder, check
    from zoo.registry import USER

    reg = builder.registry_for(list(args.files) or None)
    errors = check.check_registry(reg, origins={USER} if args.files else None)
    checked = [n for n in reg.names() if any(p.entry is not None for p in reg.providers(n))]
    if args.files:
        checked = [n for n in checked if any(p.origin.dist == USER for p in reg.providers(n))]
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s) in {len(checked)} entries", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"ok: {len(checked)} entries checked, no problems")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    import warnings

    from zoo import plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table below says the same
        found = plugins.reports()
    if not found:
        print("no third-party plugins installed (entry-point group 'zoo')")
        return 0
    for r in found:
        status = r.status if r.status != "failed" else f"failed: {r.error}"
        provides = ", ".join(r.provides) if r.provides else "-"
        print(f"{r.name}  {r.dist} {r.version or ''}  module={r.module}  load={r.seconds * 1000:.1f} ms  {status}")
        print(f"    provides: {provides}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="A declarative model zoo for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def with_registry(p: argparse.ArgumentParser) -> None:
        p.add_argument("--registry", action="append", metavar="FILE", help="extra registry TOML (repeatable)")

    p = command("list", cmd_list, "List declared entries (and Python blocks with --all or a pattern).")
    p.add_argument("pattern", nargs="?", help="glob, e.g. '*mlp*'")
    p.add_argument("--all", action="store_true", help="include Python blocks")
    with_registry(p)

    p = command("show", cmd_show, "Show a name's resolved declaration and where it came from.")
    p.add_argument("name")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    with_registry(p)

    p = command("build", cmd_build, "Build a model, print its summary and run one forward on random input.")
    p.add_argument("name")
    p.add_argument("--input-shape", type=_shape, metavar="2,20")
    p.add_argument("--set", action="append", type=_setting, default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    with_registry(p)

    p = command("check", cmd_check, "Check registry files (default: everything installed) without building.")
    p.add_argument("files", nargs="*", metavar="FILE")

    command("plugins", cmd_plugins, "List installed plugins: version, what they provide, load time, status.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from zoo.errors import ZooError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug in zoo or a plugin: say so in one line unless debugging
        if os.environ.get("ZOO_DEBUG"):
            raise
        print(f"zoo: internal error: {type(err).__name__}: {err} (set ZOO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
