"""The fuzz suites' harness: deterministic hypothesis settings, and bounds on every generated input.

`bounded()` is the property's frame: an input must not hang (a SIGALRM deadline) nor take the
machine's memory (an address-space limit: an allocation beyond it must come back as a ZooError).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from zoo import cli
from zoo._errors import ZooError

# Hypothesis caches (constants, character maps) go to a temporary folder, not into the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"zoo-hypothesis-{os.getuid()}")
FUZZ = settings(
    derandomize=True,  # the same inputs on every run: a failure reproduces
    database=None,  # nothing written into the repository
    deadline=None,  # timing is the SIGALRM deadline's job, with a margin for a loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECONDS_PER_INPUT = 30
HEADROOM = 2 * 2**30  # address space an input may add before an allocation must fail


# --- the harness ------------------------------------------------------------------------------


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """No hang (SIGALRM) and bounded memory (RLIMIT_AS) while one input runs; warnings are not failures."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"an input ran longer than {SECONDS_PER_INPUT} s")

    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_limit = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + HEADROOM, previous_limit[1]))
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_INPUT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zoo's warnings are answers too (a meta fallback, a skipped plugin)
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, previous_limit)
        signal.signal(signal.SIGALRM, previous_handler)


def _address_space() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


def zoo_cli(*argv: str) -> tuple[int, str]:
    """Run the command line in this process; its exit status and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return code, err.getvalue()


def holds_cli(code: int, err: str, what: str) -> None:
    assert code in (0, 2), f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, f"{what}:\n{err}"


def holds_api(call: Callable[[], Any], what: str) -> None:
    try:
        call()
    except ZooError:
        pass
    except Exception as err:  # anything else is a bug this suite exists to find
        raise AssertionError(f"{what}: {type(err).__name__}: {err}") from err
