"""Crash-safe writes: fill a temporary beside the target, fsync it, then rename it into place.

A reader, or a process that starts after a crash, sees the previous version or the complete
new one, never a part: a rename within one folder is atomic, and fsync before it makes sure
the renamed name cannot point at data still in flight when the power goes.

A saved model is a folder (shards, index, config, card) that must change as one. Writing its
files one by one in a careful order would still let a crash pair new shards with an old
config, so the whole folder is built beside the target and swapped in with one atomic
`renameat2(RENAME_EXCHANGE)` (Linux). Where that call is missing, two renames do the job
and `recover` puts the previous folder back if a crash fell between them.

The new file or folder takes the previous one's mode (and owner and group, where this
process may set them). A symlinked target is followed: what it points at is replaced, the
link kept. A process whose current directory is in the folder stays in the previous one, now
deleted, except the writing process itself, which is moved into the new one.

Temporaries are named `.NAME.zoo-tmp-HOST-PID-RANDOM`; a later write to the same target
removes those whose process has died (on this host), and those of any host older than
STALE_AFTER_S, since another host's process cannot be asked.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

_TEMP = ".zoo-tmp-"
_OLD = ".zoo-old-"
_HOST = "".join(c for c in socket.gethostname() if c.isalnum())[:16] or "host"
STALE_AFTER_S = 24 * 3600  # a temporary untouched this long is a dead write's, whatever its host


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a file to write that appears at `path`, complete, only when the block succeeds.

    Example:
        with atomic_file("x.safetensors") as f:
            f.write(data)
    """
    target = Path(os.path.realpath(path))  # as in atomic_dir: a link's file is replaced, the link kept
    _remove_stale(target)
    temp = _temp_name(target)
    try:
        with open(temp, "xb") as f:
            yield f
            f.flush()
            _copy_owner_and_mode(target, temp)
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], keep: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Yield an empty folder to fill; when the block succeeds it replaces `path` in one step.

    Args:
        path: the folder to create or replace (its parent is created if needed).
        keep: names in the previous folder to carry over (hard links, no copy), for files
            that the caller does not write itself.
    """
    # Absolute (a name like "." has no sibling to build beside it) and with links followed
    # (the folder a link points at is what gets replaced; the link itself stays).
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    _remove_stale(target)
    temp = _temp_name(target)
    temp.mkdir()
    try:
        if keep is not None and target.is_dir():
            _carry_over(target, temp, keep)
        yield temp
        _copy_owner_and_mode(target, temp)  # after filling: a read-only mode would stop the writes
        _fsync_tree(temp)
        cwd = _cwd_inside(target)
        _publish(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if cwd is not None:  # this process sat in the folder just deleted: move it into the new one
        try:
            os.chdir(cwd)
        except OSError:  # its subfolder is not in the new save
            os.chdir(target)


def remove_dir(path: str | os.PathLike[str]) -> None:
    """Delete a folder so that no half-deleted copy is ever left under its name."""
    target = Path(path)
    trash = _temp_name(target)
    try:
        os.rename(target, trash)
    except FileNotFoundError:
        return
    fsync_dir(target.parent)
    shutil.rmtree(trash, ignore_errors=True)


def recover(path: str | os.PathLike[str]) -> None:
    """Put the previous folder back if a crash fell between the two renames of the fallback swap."""
    target = Path(os.path.realpath(path))  # the name atomic_dir wrote under
    if target.exists():
        return
    olds = sorted(target.parent.glob(f".{_glob_escape(target.name)}{_OLD}*"), key=_mtime)
    for old in reversed(olds):
        with contextlib.suppress(OSError):  # another process may have recovered or published first
            os.rename(old, target)
            fsync_dir(target.parent)
            return


def identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(device, inode) of `path`, None when absent: it changes whenever a write here replaces `path`."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


T = TypeVar("T")

READ_ATTEMPTS = 5  # reads interrupted by another process replacing the file or folder, before giving up


def read_consistently(
    path: str | os.PathLike[str],
    read: Callable[[], T],
    *,
    retry: tuple[type[BaseException], ...],
    discard: Callable[[T], None] | None = None,
) -> T:
    """`read()` of `path`, done again while another process replaced `path` meanwhile.

    zoo's saves swap a whole file or folder in (atomic_file, atomic_dir), so a read that spans
    a swap may have mixed two saves. A read that raised one of `retry` is repeated when the
    path's identity changed during it; with `discard`, so is one that succeeded (`discard`
    releases what it opened). At most READ_ATTEMPTS reads; the last one's outcome stands.
    """
    for attempt in range(1, READ_ATTEMPTS + 1):
        last = attempt == READ_ATTEMPTS
        before = identity(path)
        try:
            result = read()
        except retry:
            if last or identity(path) == before:
                raise
            continue
        if discard is not None and not last and identity(path) != before:
            discard(result)
            continue
        return result
    raise AssertionError("unreachable: the last attempt returns or raises")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX; Windows has no directory handles to sync)."""
    if os.name != "nt":
        _fsync(path)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- publishing ------------------------------------------------------------------------------


def _publish(temp: Path, target: Path) -> None:
    """Move the finished `temp` to `target`; whatever `target` held is deleted afterwards."""
    while True:
        swapped = _exchange(temp, target)
        if swapped:  # `temp` now holds the previous folder
            fsync_dir(target.parent)
            shutil.rmtree(temp, ignore_errors=True)
            return
        try:
            os.rename(temp, target)  # succeeds when `target` is absent (or an empty folder)
            fsync_dir(target.parent)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if swapped is None:  # no atomic exchange here: move the old folder aside, then retry
            old = target.with_name(f".{target.name}{_OLD}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
            with contextlib.suppress(FileNotFoundError):  # a concurrent writer moved it first
                os.rename(target, old)
            try:
                os.rename(temp, target)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue  # another writer published in between: go round again
            finally:
                fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
            return
        # `target` appeared between the exchange and the rename (a concurrent writer): go round again


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: dict[str, object] = {}


def _exchange(a: Path, b: Path) -> bool | None:
    """Atomically swap two paths. False when `b` does not exist; None when the system cannot."""
    if "renameat2" not in _libc:
        lib = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
        function = getattr(lib, "renameat2", None)  # glibc 2.28+; absent on macOS and musl
        if function is not None:
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        _libc["renameat2"] = function
    renameat2 = _libc["renameat2"]
    if renameat2 is None:
        return None
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)  # type: ignore[operator]
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ENOENT and a.exists():
        return False
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel or a file system without it
        _libc["renameat2"] = None
        return None
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


# --- helpers -----------------------------------------------------------------------------------


def _copy_owner_and_mode(source: Path, dest: Path) -> None:
    """Give `dest` the mode, owner and group of the file or folder it replaces; none: it keeps the default."""
    try:
        info = os.stat(source)
    except FileNotFoundError:
        return
    if stat.S_IFMT(info.st_mode) != stat.S_IFMT(os.stat(dest).st_mode):
        return  # replacing a file by a folder fails later, with its own message
    if os.name == "posix":
        try:
            os.chown(dest, info.st_uid, info.st_gid)
        except PermissionError:  # only root gives files away; a group this user is in can still be set
            with contextlib.suppress(PermissionError):
                os.chown(dest, -1, info.st_gid)
    os.chmod(dest, stat.S_IMODE(info.st_mode))  # after chown, which may clear the set-id bits


def _cwd_inside(target: Path) -> Path | None:
    """This process's current directory when it is `target` or inside it (a swap would strand it), else None."""
    try:
        cwd = Path(os.getcwd())  # already absolute, links followed, as `target` is
    except FileNotFoundError:
        return None
    return cwd if cwd == target or target in cwd.parents else None


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}{_TEMP}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale(folder: str | os.PathLike[str]) -> None:
    """Delete every temporary in `folder` left by a dead write: its process (on this host) is gone,
    or it is older than STALE_AFTER_S."""
    _remove_stale_named(Path(folder), "*")


def _remove_stale(target: Path) -> None:
    _remove_stale_named(target.parent, _glob_escape(target.name))
    if target.exists():  # leftovers of a fallback swap whose new folder did get published
        for old in target.parent.glob(f".{_glob_escape(target.name)}{_OLD}*"):
            shutil.rmtree(old, ignore_errors=True)


def _remove_stale_named(folder: Path, name_pattern: str) -> None:
    now = time.time()
    for entry in folder.glob(f".{name_pattern}{_TEMP}*-*-*"):
        owner, pid, _ = entry.name.rsplit(_TEMP, 1)[-1].rsplit("-", 2)
        dead = owner == _HOST and pid.isdigit() and not _alive(int(pid))
        if not dead and now - _mtime(entry) < STALE_AFTER_S:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another process
        return 0.0


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _carry_over(source: Path, dest: Path, keep: Callable[[str], bool]) -> None:
    for entry in source.iterdir():
        if not keep(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dest / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(dest / entry.name))


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                _fsync(path)
        fsync_dir(Path(folder))


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)
