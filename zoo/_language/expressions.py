"""`${...}` in declarations: a small, safe expression language, never `eval`.

    "${hidden}"                 the value of an argument, typed (int stays int)
    "${4 * d}"  "${d // h}"     arithmetic: + - * / // % ** and parentheses
    "${stride != 1 or c_in != c_out}"   comparisons, and / or / not, `a if cond else b`
    "${max(1, d // 64)}"        min(), max(), len(), lists [a, b] and their items: "${widths[i]}"
    "denselayer${i + 1}"        text around `${...}` makes a string

Expressions are parsed with Python's own parser (`ast`, no execution) and evaluated by a
whitelist walker over a closed set of node types: no attribute access, no calls other than
min, max and len, no names other than the scope's.

Everything is bounded before it can cost much, because a declaration may be a stranger's
(a Hub repo's config.json): the text of one string (`MAX_SOURCE` characters), how deeply an
expression nests (`MAX_DEPTH`, measured on the text before Python's parser, which recurses,
ever sees it), the bits of an int, and the size of every value as it is built (`MAX_SIZE`
items and characters over all nested levels), so neither `${10 ** 10 ** 10}` nor
`${[[[1] * 4096] * 4096] * 4096}` can eat the machine.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo._errors import SpecError, clip, did_you_mean, listing, shown

_TEMPLATE = re.compile(r"\$\{([^{}]*)\}")
_MAX_INT_BITS = 256  # no tensor dimension or hyperparameter needs more
_MAX_TEXT = 4096  # characters in a string result, items in a list
MAX_SOURCE = 4096  # characters in a string holding `${...}`; the longest in zoo's registry is 116
MAX_DEPTH = 50  # operators and brackets on the deepest path of one expression; zoo's registry needs 20
MAX_SIZE = 16384  # every value: items and characters over all its nested levels together
_OPERATOR_CHARS = frozenset("+-*/%<>=!~&|^@:.")
_OPERATOR_WORDS = frozenset(("not", "and", "or", "if", "else", "in", "is", "lambda", "for", "await", "yield"))
_FSTRING_PREFIXES = frozenset(("f", "rf", "fr"))

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
    ast.In: lambda item, items: item in items,
    ast.NotIn: lambda item, items: item not in items,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "len": len}
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
            raise SpecError(
                f"{where}: '{clip(self.text)}' makes a string of {len(text)} characters (at most {_MAX_TEXT})."
            )
        return text


def has_template(value: str) -> bool:
    """Whether a string holds `${`: such a string is an expression or malformed."""
    return "${" in value


def parse(text: str, where: str) -> Expr:
    """Parse a string holding `${...}`. Raises SpecError for an unclosed brace or a bad expression."""
    if len(text) > MAX_SOURCE:
        raise SpecError(
            f"{where}: a string holding '${{' is {len(text)} characters long; expressions are at most {MAX_SOURCE}."
        )
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
        raise SpecError(f"{where}: '{clip(text)}' opens '${{' without a matching '}}'.")
    if rest:
        parts.append(rest)
    return Expr(text, tuple(parts), frozenset(names))


def _parse_one(source: str, text: str, where: str) -> ast.Expression:
    if not source.strip():
        raise SpecError(
            f"{where}: '{clip(text)}' has an empty '${{}}'; write an argument name or an expression inside."
        )
    depth = _depth_bound(source, text, where)
    if depth > MAX_DEPTH:
        raise SpecError(
            f"{where}: '{clip(text)}' is an expression nested too deeply: {depth} operators and brackets on its "
            f"deepest path, at most {MAX_DEPTH}. Split it into `args` that use each other."
        )
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise SpecError(f"{where}: '{clip(text)}' is not a valid expression: {err.msg}.") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise SpecError(f"{where}: '{clip(text)}': {_refusal(node)}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords
        ):
            raise SpecError(
                f"{where}: '{clip(text)}': only min(...), max(...) and len(...) can be called in an expression."
            )
    return tree


def _depth_bound(source: str, text: str, where: str) -> int:
    """An upper bound on how deeply the expression's syntax tree nests, read from its text alone.

    Python's parser and the evaluator both recurse once per level, so the depth is bounded
    here, in one pass with no recursion, before either runs. Every node of the tree is made by
    a token: an operator or keyword by its own, a list, call or subscript by its bracket, a
    tuple by the commas of its bracket (one node however many). The nodes on any path from
    the root are distinct, so a path holds at most, for each bracket it passes through, the
    operators written directly inside that bracket, plus one. Operator characters count one
    each (`**` counts two): a bound, not the depth itself.
    """
    # One frame per open bracket: [operators directly inside, deepest bound of a closed bracket inside, has a comma]
    stack: list[list[int]] = [[0, 0, 0]]
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c in "'\"":
            start = i
            while start > 0 and (source[start - 1].isalnum() or source[start - 1] == "_"):
                start -= 1
            if source[start:i].lower() in _FSTRING_PREFIXES:  # f"{...}" parses the text inside: refused unread
                raise SpecError(f"{where}: '{clip(text)}': f-strings are not part of the expression language.")
            quote = source[i : i + 3] if source[i : i + 3] == c * 3 else c
            i += len(quote)
            while i < n and source[i : i + len(quote)] != quote:
                i += 2 if source[i] == "\\" else 1
            i += len(quote)
        elif c in "([{":
            stack.append([0, 0, 0])
            i += 1
        elif c in ")]}":
            if len(stack) > 1:
                ops, inner, comma = stack.pop()
                stack[-1][1] = max(stack[-1][1], ops + comma + 1 + inner)
            i += 1
        elif c in _OPERATOR_CHARS:
            stack[-1][0] += 1
            i += 1
        elif c == ",":
            stack[-1][2] = 1
            i += 1
        elif c.isalpha() or c == "_":
            start = i
            while i < n and (source[i].isalnum() or source[i] == "_"):
                i += 1
            if source[start:i] in _OPERATOR_WORDS:
                stack[-1][0] += 1
        else:
            i += 1
    depth = 0
    while stack:  # brackets left open: the parser refuses them, but they count here all the same
        ops, inner, comma = stack.pop()
        depth = ops + comma + 1 + max(inner, depth)
    return depth


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
    ast.Subscript,  # an item of a list: widths[i]
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
    if isinstance(node, ast.Slice):
        return "slices are not part of the expression language; take one item, widths[i]."
    if isinstance(node, (ast.Lambda, ast.NamedExpr, ast.ListComp, ast.GeneratorExp, ast.DictComp, ast.SetComp)):
        return f"{type(node).__name__} is not part of the expression language."
    return (
        f"'{type(node).__name__}' is not part of the expression language "
        "(numbers, strings, names, + - * / // % **, comparisons, `in`, and/or/not, a if c else b, min, max, len, "
        "[lists] and their items)."
    )


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any], where: str, text: str) -> None:
        self.scope = scope
        self.where = where
        self.text = text
        self.sizes: dict[int, tuple[Any, int]] = {}  # id(list) → (the list, kept alive; its size)

    def fail(self, message: str) -> SpecError:
        return SpecError(f"{self.where}: '{clip(self.text)}': {message}")

    def size(self, value: Any) -> int:
        """Items and characters over all nested levels (a list counts one, plus its items)."""
        if isinstance(value, str):
            return max(1, len(value))
        if not isinstance(value, (list, tuple)):
            return 1
        known = self.sizes.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        total = 1 + sum(self.size(v) for v in value)
        self.sizes[id(value)] = (value, total)
        return total

    def made(self, value: Any, size: int) -> Any:
        """`value`, just built with `size` (computed before building it): refused past MAX_SIZE."""
        if size > MAX_SIZE:
            raise self.fail(
                f"the result would hold {size} items and characters over all its levels (at most {MAX_SIZE})."
            )
        if isinstance(value, list):
            self.sizes[id(value)] = (value, size)
        return value

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
            items = []
            size = 1
            for element in node.elts:  # bounded item by item: no list is built past the bound
                items.append(self.eval(element))
                size += self.size(items[-1])
                self.made(None, size)
            return self.made(items, size)
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
                if isinstance(op, (ast.In, ast.NotIn)) and not isinstance(right, (list, tuple, str)):
                    raise self.fail(f"`in` looks in a list or a string, not in {_kind(right)}.")
                if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, str) and not isinstance(left, str):
                    raise self.fail(f"`in` a string looks for a string, not for {_kind(left)}.")
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
        if isinstance(node, ast.Subscript):
            return self.item(self.eval(node.value), self.eval(node.slice))
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)  # _parse_one allows only min, max and len
            args = [self.eval(a) for a in node.args]
            if node.func.id == "len":
                if len(args) != 1 or not isinstance(args[0], (list, tuple, str)):
                    got = ", ".join(_kind(a) for a in args) or "nothing"
                    raise self.fail(f"len() takes one list or string, got {got}.")
                return len(args[0])
            if len(args) == 1 and isinstance(args[0], (list, tuple)):
                args = list(args[0])
            if not args:
                raise self.fail(f"{node.func.id}() needs at least one value.")
            try:
                return _FUNCTIONS[node.func.id](*args)
            except ValueError:  # min('') iterates the string's characters: there are none
                raise self.fail(f"{node.func.id}() needs at least one value.") from None
            except TypeError:
                raise self.fail(f"{node.func.id}() cannot order {', '.join(_kind(a) for a in args)}.") from None
        raise self.fail(_refusal(node))  # unreachable after _parse_one; kept as a guard

    def binary(self, node: ast.BinOp) -> Any:
        left, right = _listed(self.eval(node.left)), _listed(self.eval(node.right))
        symbol = _SYMBOL[type(node.op)]
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            self.made(None, len(left) + len(right))
            return self.bounded(left + right)
        if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            size = self.size(left) + self.size(right) - 1
            self.made(None, size)
            return self.made(self.bounded(left + right), size)
        if isinstance(node.op, ast.Mult) and isinstance(left, (str, list)) != isinstance(right, (str, list)):
            count = right if isinstance(left, (str, list)) else left
            seq = left if isinstance(left, (str, list)) else right
            if type(count) is not int:
                raise self.fail(f"'{symbol}' repeats a {_kind(seq)} only by an int, got {_kind(count)}.")
            count = max(count, 0)
            if count * len(seq) > _MAX_TEXT:
                raise self.fail(f"the result would hold {count * len(seq)} items (at most {_MAX_TEXT}).")
            if isinstance(seq, str):
                return self.made(seq * count, count * len(seq))
            size = 1 + count * (self.size(seq) - 1)
            self.made(None, size)  # checked before the list is built
            return self.made(seq * count, size)
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

    def item(self, sequence: Any, index: Any) -> Any:
        """sequence[index]: one item of a list (an argument such as `widths = [64, 128]`), counted from 0."""
        if not isinstance(sequence, (list, tuple)):
            raise self.fail(f"only a list has items, not {_kind(sequence)}.")
        if type(index) is not int:
            raise self.fail(f"a list's item is picked by an int, got {_kind(index)}.")
        if not -len(sequence) <= index < len(sequence):
            raise self.fail(f"there is no item {index} in a list of {len(sequence)} (items 0 to {len(sequence) - 1}).")
        return sequence[index]

    def need_number(self, value: Any, symbol: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(f"'{symbol}' needs numbers, got {_kind(value)}.")

    def bounded(self, value: Any) -> Any:
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise self.fail(f"the result has {value.bit_length()} bits; declarations stay below {_MAX_INT_BITS}.")
        if isinstance(value, (str, list)) and len(value) > _MAX_TEXT:
            raise self.fail(f"the result holds {len(value)} items (at most {_MAX_TEXT}).")
        return value


def _listed(value: Any) -> Any:
    """An array argument (a tuple once parsed) as the list it was written as: `${widths + [512]}`."""
    return list(value) if isinstance(value, tuple) else value


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {shown(value, 60)}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_PLAIN = frozenset((int, float, bool, str, type(None)))


def names_in(value: Any) -> Iterator[str]:
    """Every name read by the expressions inside `value` (nested tuples and mappings too)."""
    if type(value) in _PLAIN:  # the common case first: Mapping's isinstance is an ABC check
        return
    if isinstance(value, Expr):
        yield from value.names
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from names_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from names_in(item)
