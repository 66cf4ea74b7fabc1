"""A metric accumulator that stays on the device: the host waits once per N steps, not every batch.

The seed's warning: printing a GPU loss every batch (or storing it in a NumPy array) copies it
to the host and blocks until the GPU catches up. Here sums stay device tensors; `add` copies
them to the host in one transfer every `sync_every` steps, and `mean()` / `value()` once more.
"""

from __future__ import annotations

from numbers import Real

import torch

from zoo._errors import ArgumentError


class Accumulator:
    """Running sums and means of named metrics, kept on their device.

    Args:
        sync_every: copy the sums to the host once every this many `add` calls.

    Example:
        >>> acc = zoo.Accumulator(sync_every=100)
        >>> for X, y in batches:
        ...     logs = acc.add(loss=loss.detach(), correct=(y_hat.argmax(1) == y))
        ...     if logs is not None:
        ...         print(logs)  # {'loss': 0.41, 'correct': 0.87}: means so far
    """

    def __init__(self, sync_every: int = 100) -> None:
        if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
            raise ArgumentError(f"Accumulator(sync_every={sync_every!r}): give a whole number of steps ≥ 1.")
        self.sync_every = sync_every
        self.steps = 0  # add() calls since the last reset
        self.syncs = 0  # device → host copies made, for tests and for the curious
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}  # elements added per metric: known on the host, no sync
        self._host: dict[str, float] = {}  # the sums at the last sync
        self._synced_at = 0  # self.steps when _host was taken

    def add(self, **metrics: torch.Tensor | float) -> dict[str, float] | None:
        """Add each metric's elements to its sum, on the metric's own device.

        A tensor adds all its elements (a per-sample loss, a boolean `correct`), a number adds
        itself. Every `sync_every`-th call copies the sums to the host once.

        Returns:
            The means so far (`mean()`) on a syncing call, else None.

        Raises:
            ArgumentError: no metric, or a value that is neither a tensor nor a number.
        """
        if not metrics:
            raise ArgumentError("Accumulator.add() needs at least one metric, e.g. add(loss=loss.detach()).")
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                total, count = value.detach().sum(), value.numel()
            elif isinstance(value, Real) and not isinstance(value, bool):
                total, count = torch.tensor(value, dtype=torch.float64), 1
            else:
                raise ArgumentError(f"Accumulator.add({name}=…): a {type(value).__name__} is not a tensor or a number.")
            previous = self._sums.get(name)
            if previous is None:
                self._sums[name] = total
            elif previous.device != total.device:
                raise ArgumentError(
                    f"Accumulator.add({name}=…) got a tensor on {total.device}, but '{name}' accumulates on "
                    f"{previous.device}; keep a metric on one device (copying it each step is what this avoids)."
                )
            else:
                self._sums[name] = previous + total  # a device op: queued, no waiting
            self._counts[name] = self._counts.get(name, 0) + count
        self.steps += 1
        if self.steps % self.sync_every == 0:
            self._sync()
            return self._means()
        return None

    def value(self) -> dict[str, float]:
        """The sums on the host: one transfer, none when nothing was added since the last."""
        if self._synced_at != self.steps or self._host.keys() != self._sums.keys():
            self._sync()
        return dict(self._host)

    def mean(self) -> dict[str, float]:
        """Each sum divided by the number of elements added to it."""
        self.value()
        return self._means()

    def reset(self) -> None:
        """Forget every sum; `syncs` keeps counting."""
        self.steps = 0
        self._sums.clear()
        self._counts.clear()
        self._host.clear()
        self._synced_at = 0

    def _sync(self) -> None:
        # One transfer per device: stack the sums, then a single copy to the host.
        by_device: dict[torch.device, list[str]] = {}
        for name, total in self._sums.items():
            by_device.setdefault(total.device, []).append(name)
        for device, names in by_device.items():
            wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
            values = torch.stack([self._sums[n].to(wide) for n in names]).tolist()
            self._host.update(zip(names, values, strict=True))
            self.syncs += 1
        self._synced_at = self.steps

    def _means(self) -> dict[str, float]:
        return {name: total / self._counts[name] for name, total in self._host.items()}

    def __repr__(self) -> str:
        return f"Accumulator(sync_every={self.sync_every}, steps={self.steps}, metrics={list(self._sums)})"
