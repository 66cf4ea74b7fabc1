"""Progress bars for large saves and loads, and none where nobody can watch one."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

PROGRESS_MIN_BYTES = 1 << 30  # smaller saves and loads finish before a bar would be worth reading


def progress(total: int, desc: str) -> Any:
    """A progress bar for a transfer of `total` bytes, shown only where someone can watch it.

    Otherwise no tqdm at all: even disabled, one costs about a millisecond to set up (a lock
    and a monitor thread), as much as a whole small load.
    """
    if total < PROGRESS_MIN_BYTES or not _on_terminal():
        return _NO_BAR
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


def _on_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


_NO_BAR = _NoBar()
