"""`${...}` in declarations: a small, safe expression language, never `eval`.

    "${hidden}"                 the value of an argument, typed (int stays int)
    "${4 * d}"  "${d // h}"     arithmetic: + - * / // % ** and parentheses
    "${stride != 1 or c_in != c_out}"   comparisons, and / or / not, `a if cond else b`
    "${max(1, d // 64)}"        min(), max(), and lists [a, b]
    "denselayer${i + 1}"        text around `${...}` makes a string

Expressions are parsed with Python's own parser (`ast`, no execution) and evaluated by a
whitelist walker over a closed set of node types: no attribute access, no calls other than
min and max, no names other than the scope's. Results are bounded, so a hostile declaration
cannot make `${10 ** 10 ** 10}` eat the machine.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo._errors import SpecError, did_you_mean, listing

_TEMPLATE = re.compile(r"\$\{([^{}]*)\}")
_MAX_INT_BITS = 256  # no tensor dimension or hyperparameter needs more
_MAX_TEXT = 4096  # characters in a string result

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


@dataclass(frozen=True)
class Expr:
    """A value written with `${...}`: the whole string is one expression, or text around some."""

    text: str  # as written, for messages and for writing the declaration back
    parts: tuple[str | ast.Expression, ...] = field(compare=False)  # literal text and parsed expressions
    names: frozenset[str] = field(compare=False)  # every name it reads

    @property
    def whole(self) -> bool:
        """True when the string is exactly `${expr}`: the result keeps its type."""
        return len(self.parts) == 1 and not isinstance(self.parts[0], str)

    def evaluate(self, scope: Mapping[str, Any], where: str) -> Any:
        """The value under `scope` (argument values by name). Raises SpecError naming `where`."""
        values = [
            part if isinstance(part, str) else _Evaluator(scope, where, self.text).run(part) for part in self.parts
        ]
        if self.whole:
            return values[0]
        text = "".join(_text(v) for v in values)
        if len(text) > _MAX_TEXT:
            raise SpecError(f"{where}: '{self.text}' makes a string of {len(text)} characters (at most {_MAX_TEXT}).")
        return text


def has_template(value: str) -> bool:
    """Whether a string holds `${`: such a string is an expression or malformed."""
    return "${" in value


def parse(text: str, where: str) -> Expr:
    """Parse a string holding `${...}`. Raises SpecError for an unclosed brace or a bad expression."""
    parts: list[str | ast.Expression] = []
    names: set[str] = set()
    pos = 0
    for match in _TEMPLATE.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        tree = _parse_one(match.group(1), text, where)
        names.update(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCTIONS)
        parts.append(tree)
        pos = match.end()
    rest = text[pos:]
    if "${" in rest:
        raise SpecError(f"{where}: '{text}' opens '${{' without a matching '}}'.")
    if rest:
        parts.append(rest)
    return Expr(text, tuple(parts), frozenset(names))


def _parse_one(source: str, text: str, where: str) -> ast.Expression:
    if not source.strip():
        raise SpecError(f"{where}: '{text}' has an empty '${{}}'; write an argument name or an expression inside.")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise SpecError(f"{where}: '{text}' is not a valid expression: {err.msg}.") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise SpecError(f"{where}: '{text}': {_refusal(node)}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords
        ):
            raise SpecError(f"{where}: '{text}': only min(...) and max(...) can be called in an expression.")
    return tree


_ALLOWED = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.List,
    ast.Tuple,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.And,
    ast.Or,
    *_BINARY,
    *_COMPARE,
)


def _refusal(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"attribute access ('.{node.attr}') is not part of the expression language."
    if isinstance(node, (ast.Subscript, ast.Slice)):
        return "indexing is not part of the expression language."
    if isinstance(node, (ast.Lambda, ast.NamedExpr, ast.ListComp, ast.GeneratorExp, ast.DictComp, ast.SetComp)):
        return f"{type(node).__name__} is not part of the expression language."
    return (
        f"'{type(node).__name__}' is not part of the expression language "
        "(numbers, strings, names, + - * / // % **, comparisons, and/or/not, a if c else b, min, max, [lists])."
    )


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any], where: str, text: str) -> None:
        self.scope = scope
        self.where = where
        self.text = text

    def fail(self, message: str) -> SpecError:
        return SpecError(f"{self.where}: '{self.text}': {message}")

    def run(self, tree: ast.Expression) -> Any:
        return self.eval(tree.body) if isinstance(tree, ast.Expression) else self.eval(tree)

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)) and node.value is not None:
                raise self.fail(f"the constant {node.value!r} is not a number, string or boolean.")
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in self.scope:
                known = sorted(self.scope)
                raise self.fail(
                    f"'{node.id}' is not a declared argument.{did_you_mean(node.id, known)} "
                    f"Declare it in the entry's `args` table (in scope here: {listing(known)})."
                )
            return self.scope[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.UnaryOp):
            value = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            self.need_number(value, "-" if isinstance(node.op, ast.USub) else "+")
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.BoolOp):
            result = self.eval(node.values[0])
            for value in node.values[1:]:
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
                result = self.eval(value)
            return result
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.eval(right_node)
                try:
                    ok = _COMPARE[type(op)](left, right)
                except TypeError:
                    raise self.fail(f"cannot compare {_kind(left)} with {_kind(right)}.") from None
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)  # _parse_one allows only min/max
            args = [self.eval(a) for a in node.args]
            if len(args) == 1 and isinstance(args[0], list):
                args = args[0]
            if not args:
                raise self.fail(f"{node.func.id}() needs at least one value.")
            try:
                return _FUNCTIONS[node.func.id](*args)
            except TypeError:
                raise self.fail(f"{node.func.id}() cannot order {', '.join(_kind(a) for a in args)}.") from None
        raise self.fail(_refusal(node))  # unreachable after _parse_one; kept as a guard

    def binary(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        symbol = _SYMBOL[type(node.op)]
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            return self.bounded(left + right)
        if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            return self.bounded(left + right)
        if isinstance(node.op, ast.Mult) and isinstance(left, (str, list)) != isinstance(right, (str, list)):
            count = right if isinstance(left, (str, list)) else left
            seq = left if isinstance(left, (str, list)) else right
            if type(count) is not int:
                raise self.fail(f"'{symbol}' repeats a {_kind(seq)} only by an int, got {_kind(count)}.")
            if count * len(seq) > _MAX_TEXT:
                raise self.fail(f"the result would hold {count * len(seq)} items (at most {_MAX_TEXT}).")
            return left * right
        self.need_number(left, symbol)
        self.need_number(right, symbol)
        if isinstance(node.op, ast.Pow) and abs(right) > 64 and abs(left) > 1:
            raise self.fail(f"{left} ** {right} is too large for a declaration.")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise self.fail("division by zero.") from None
        except OverflowError:
            raise self.fail("the result is too large.") from None
        return self.bounded(result)

    def need_number(self, value: Any, symbol: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(f"'{symbol}' needs numbers, got {_kind(value)}.")

    def bounded(self, value: Any) -> Any:
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise self.fail(f"the result has {value.bit_length()} bits; declarations stay below {_MAX_INT_BITS}.")
        if isinstance(value, (str, list)) and len(value) > _MAX_TEXT:
            raise self.fail(f"the result holds {len(value)} items (at most {_MAX_TEXT}).")
        return value


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def names_in(value: Any) -> Iterator[str]:
    """Every name read by the expressions inside `value` (nested tuples and mappings too)."""
    if isinstance(value, Expr):
        yield from value.names
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from names_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from names_in(item)
