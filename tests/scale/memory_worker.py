"""One rank of test_memory.py's runs (python tests/scale/memory_worker.py RANK WORLD PORT FOLDER OUT).

Loads FOLDER sharded, then saves it sharded to OUT, and prints the peak resident memory each
step added (VmHWM after it, less VmRSS before it; the peak is reset in between through
/proc/self/clear_refs) as one JSON line. Start-up (imports, the process group, FSDP's first
call) is paid before the first measurement.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> int:
    """Make VmHWM the current resident size again (Linux >= 4.0) and return that size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")


def main(rank: int, world: int, port: int, folder: Path, out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    import zoo

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    zoo.build("mlp", mesh=mesh)  # imports and FSDP's first-call set-up are start-up, not load
    dist.barrier()
    before = reset_peak()
    model = zoo.load(folder, mesh=mesh)
    load = status("VmHWM") - before
    share = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    dist.barrier()
    before = reset_peak()
    zoo.save(model, out)
    save = status("VmHWM") - before
    dist.barrier()
    print(json.dumps({"rank": rank, "load": load, "save": save, "share": share}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
