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
import stat
from typing import Any

from zoo.errors import WeightsError, ZooError

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
    too_deep = _too_deep(decoded)
    if too_deep is not None:
        raise error(f"{where}: nested more than {MAX_DEPTH} levels deep at {_path(too_deep)}")
    try:
        data = json.loads(decoded, parse_int=_int, parse_constant=_constant)
    except (json.JSONDecodeError, ValueError) as err:
        raise error(f"{where} is not valid JSON: {err}") from None
    long_int = _find_long_int(data)
    if long_int is not None:
        raise error(
            f"{where}: the integer at {_path(long_int)} has more than {MAX_INT_DIGITS} digits; "
            "no size or count in a zoo file is that long"
        )
    return data


def _int(digits: str) -> int | _LongInt:
    return _LongInt(digits) if len(digits.lstrip("-")) > MAX_INT_DIGITS else int(digits)


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON (zoo writes none)")


def _too_deep(text: str) -> list[str | int] | None:
    """The key path where nesting first exceeds MAX_DEPTH, found without recursion; None when within it.

    Only brackets outside strings count; the text need not be valid JSON (the parser says
    what else is wrong), so the path is the best reading of what came before.
    """
    stack: list[list[Any]] = []  # per open container: [kind, key or index, expecting a key]
    i, n = 0, len(text)
    last_string = ""
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last_string = text[i : j + 1]
            if stack and stack[-1][0] == "{" and stack[-1][2]:
                try:
                    stack[-1][1] = json.loads(last_string)
                except ValueError:
                    stack[-1][1] = last_string
                stack[-1][2] = False
            i = j + 1
            continue
        if c in "[{":
            if len(stack) >= MAX_DEPTH:
                return [frame[1] for frame in stack]
            stack.append([c, 0 if c == "[" else "", c == "{"])
        elif c in "]}":
            if stack:
                stack.pop()
        elif c == "," and stack:
            if stack[-1][0] == "[":
                stack[-1][1] += 1
            else:
                stack[-1][2] = True
        i += 1
    return None


def _find_long_int(data: Any) -> list[str | int] | None:
    todo: list[tuple[Any, list[str | int]]] = [(data, [])]
    while todo:  # depth is bounded already, but a loop needs no stack at all
        value, path = todo.pop()
        if isinstance(value, _LongInt):
            return path
        if isinstance(value, dict):
            todo.extend((v, [*path, k]) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, [*path, i]) for i, v in enumerate(value))
    return None


def _path(path: list[str | int]) -> str:
    """`declaration.layers[3].type`, or `the top level` for an empty path."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the top level"


def _kind(mode: int) -> str:
    kinds = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device"}
    return kinds.get(stat.S_IFMT(mode), "a special file")
