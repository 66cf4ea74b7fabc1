"""Bounded JSON: the one reader for every JSON zoo takes from a file, a header or a server.

config.json, the shard index, and the JSON strings in safetensors headers (`zoo.aliases`,
`zoo.structure`) come from whoever wrote the folder or the Hub repo. Python's own parser has
no limits that fit such input: 100,000 nested brackets exhaust the stack (RecursionError), a
5,000-digit integer raises a bare ValueError, and a path that is a FIFO or /dev/zero never
ends. Here every input is held to limits far above anything zoo writes, and every breach is a
ZooError naming the file and the key path (`config.json: declaration.layers[3]`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

from zoo._errors import WeightsError, ZooError

MAX_BYTES = 16 * 2**20  # zoo's own files are a few KiB; an index of a huge model is about 100 KiB
MAX_DEPTH = 100  # objects and arrays inside each other; zoo writes at most a few dozen
MAX_INT_DIGITS = 40  # beyond any size or count (int64 has 19 digits), far below Python's 4,300


class _LongInt:
    """An integer literal too long to convert, kept as text until its key path is known."""

    def __init__(self, digits: str) -> None:
        self.digits = digits


def read(
    path: str | os.PathLike[str],
    where: str | None = None,
    *,
    max_bytes: int = MAX_BYTES,
    error: type[ZooError] = WeightsError,
) -> Any:
    """Parse the JSON file at `path` (see `read_bytes` and `loads` for the limits); `where` names it in messages.

    Raises:
        `error` (WeightsError by default): not a regular file, too large, unreadable, not
            UTF-8, not JSON, nested too deeply, or an integer too long; the message names `path`.
    """
    where = where or str(path)
    return loads(read_bytes(path, where, max_bytes=max_bytes, error=error), where, max_bytes=max_bytes, error=error)


def read_bytes(
    path: str | os.PathLike[str], where: str | None = None, *, max_bytes: int, error: type[ZooError] = WeightsError
) -> bytes:
    """The contents of a regular file (links followed) of at most `max_bytes`.

    Opening does not block (a FIFO is refused, not waited on), and no more than `max_bytes`
    is ever read, so /dev/zero or a file that grows while it is read cannot exhaust memory.
    """
    where = where or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{where}: no such file") from None
    except OSError as err:
        raise error(f"{where}: cannot open it: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{where} is not a regular file ({_kind(info.st_mode)}); zoo reads JSON only from files")
        if info.st_size > max_bytes:
            raise error(f"{where} is {info.st_size:,} bytes, over zoo's limit of {max_bytes:,} for a JSON file")
        chunks, total = [], 0
        while total <= max_bytes:  # st_size can lie (a file still growing): count what arrives
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise error(f"{where}: cannot read it: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise error(f"{where} grew past zoo's limit of {max_bytes:,} bytes while it was read")
    return b"".join(chunks)


def loads(text: str | bytes, where: str, *, max_bytes: int = MAX_BYTES, error: type[ZooError] = WeightsError) -> Any:
    """Parse JSON text within zoo's limits; `where` names its source in messages ("x.safetensors: `zoo.aliases`").

    Raises:
        `error` (WeightsError by default), naming `where` and, where the fault is inside, its key path.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > max_bytes:
        raise error(f"{where} is {len(raw):,} bytes, over zoo's limit of {max_bytes:,} for JSON")
    try:
        decoded = raw.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError as err:
        raise error(f"{where} is not UTF-8 text: {err}") from None
    long_ints: list[_LongInt] = []

    def parse_int(digits: str) -> int | _LongInt:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:  # int() would raise past 4,300 digits, slowly before
            long_ints.append(_LongInt(digits))
            return long_ints[-1]
        return int(digits)

    try:
        data = json.loads(decoded, parse_int=parse_int, parse_constant=_constant)
    except RecursionError:  # far deeper than MAX_DEPTH: find where, without recursion
        raise error(f"{where}: nested more than {MAX_DEPTH} levels deep at {_path(_too_deep(decoded) or [])}") from None
    except ValueError as err:  # JSONDecodeError is one
        raise error(f"{where} is not valid JSON: {err}") from None
    if long_ints or decoded.count("[") + decoded.count("{") > MAX_DEPTH:  # else neither can be: skip the walk
        problem = _first_problem(data)
        if problem is not None and problem[0] == "deep":
            raise error(f"{where}: nested more than {MAX_DEPTH} levels deep at {_path(problem[1])}")
        if problem is not None:
            raise error(
                f"{where}: the integer at {_path(problem[1])} has more than {MAX_INT_DIGITS} digits; "
                "no size or count in a zoo file is that long"
            )
    return data


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (zoo writes none)")


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')  # strings whole, and the characters that nest or separate


def _too_deep(text: str) -> list[str | int] | None:
    """The key path where nesting first exceeds MAX_DEPTH, found without recursion; None when within it.

    Only brackets outside strings count; the text need not be valid JSON (the parser says
    what else is wrong), so the path is the best reading of what came before.
    """
    stack: list[list[Any]] = []  # per open container: [kind, key or index, expecting a key]
    for match in _TOKENS.finditer(text):  # the regex skips everything else at C speed
        token = match.group()
        if token[0] == '"':
            if stack and stack[-1][0] == "{" and stack[-1][2]:
                try:
                    stack[-1][1] = json.loads(token)
                except ValueError:
                    stack[-1][1] = token
                stack[-1][2] = False
        elif token in "[{":
            if len(stack) >= MAX_DEPTH:
                return [frame[1] for frame in stack]
            stack.append([token, 0 if token == "[" else "", token == "{"])
        elif token in "]}":
            if stack:
                stack.pop()
        elif stack:  # ","
            if stack[-1][0] == "[":
                stack[-1][1] += 1
            else:
                stack[-1][2] = True
    return None


def _first_problem(data: Any) -> tuple[str, list[str | int]] | None:
    """("deep", path) where nesting first exceeds MAX_DEPTH, or ("digits", path) of an overlong integer."""
    if not _has_problem(data):
        return None
    todo: list[tuple[Any, list[str | int]]] = [(data, [])]
    while todo:  # the same walk again, now keeping paths for the message
        value, path = todo.pop()
        if isinstance(value, _LongInt):
            return "digits", path
        if isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                return "deep", path
            items = value.items() if isinstance(value, dict) else enumerate(value)
            todo.extend((v, [*path, k]) for k, v in items if isinstance(v, (dict, list, _LongInt)))
    return None


def _has_problem(data: Any) -> bool:
    """Whether any container nests deeper than MAX_DEPTH or any integer is overlong: a loop, depths only (fast)."""
    todo: list[tuple[Any, int]] = [(data, 0)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, _LongInt) or depth >= MAX_DEPTH:
            return True
        if not isinstance(value, (dict, list)):  # a scalar at the top
            continue
        children = value.values() if isinstance(value, dict) else value
        todo.extend((v, depth + 1) for v in children if isinstance(v, (dict, list, _LongInt)))
    return False


def _path(path: list[str | int]) -> str:
    """`declaration.layers[3].type`, or `the top level` for an empty path."""
    text = ""
    for part in path[:8]:  # enough to find the place; the rest of a deep path is the same brackets
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return (text + ("…" if len(path) > 8 else "")) or "the top level"


def _kind(mode: int) -> str:
    kinds = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device"}
    return kinds.get(stat.S_IFMT(mode), "a special file")
