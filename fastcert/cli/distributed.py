"""Sharded runs under torchrun: rank and world size, the device of each rank, per-rank log parts and their
merge (``certify`` writes ``OUT.part<r>of<w>``; rank 0, or ``analyze OUT --merge W``, merges them)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from fastcert.errors import CliError


def rank_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (RANK / WORLD_SIZE), else (0, 1)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise CliError(f"RANK / WORLD_SIZE must be integers, got {os.environ.get('RANK')!r} / "
                       f"{os.environ.get('WORLD_SIZE')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise CliError(f"bad RANK={rank} / WORLD_SIZE={world}")
    return rank, world


def rank_device(device):
    """The device this rank runs on: ``cuda`` (no index) under torchrun becomes ``cuda:LOCAL_RANK`` and is
    made current, so that the ranks of a node use one GPU each (fastcert._native.torchrun_device). A bad
    LOCAL_RANK is a CliError. Returns a string usable as ``--device``."""
    from fastcert import _native

    if "LOCAL_RANK" not in os.environ:  # not under torchrun: the device as given (checked where it is used)
        return device
    try:
        return str(_native.torchrun_device(device))
    except ValueError as e:
        raise CliError(str(e)) from None


def part_path(out, rank: int, world: int) -> str:
    """The log part of ``rank`` out of ``world``."""
    return f"{out}.part{rank}of{world}"


def finish_distributed(out, rank: int, world: int, columns, settings) -> None:
    """All ranks wait (gloo barrier when torch.distributed can initialize); rank 0 merges the parts."""
    import torch.distributed as dist

    started = False
    if dist.is_available() and not dist.is_initialized() and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo")
        started = True
    if not (dist.is_available() and dist.is_initialized()):
        # no process group (ranks started by hand): nobody knows when the others finish
        print(f"rank {rank}: wrote {part_path(out, rank, world)}; merge the parts with "
              f"`analyze {out} --merge {world}` when all ranks are done")
        return
    dist.barrier()
    if rank == 0:
        merge_parts(out, world, columns, settings)
    if started:
        dist.barrier()
        dist.destroy_process_group()


def merge_parts(out, world: int, columns=None, settings=None) -> int:
    """Merge ``out.part<r>of<world>`` logs into ``out`` (rows sorted by idx, each idx once), keeping rows
    already in ``out``. Returns the number of rows written."""
    from fastcert.io.logs import LogWriter

    parts = [Path(part_path(out, r, world)) for r in range(world)]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise FileNotFoundError(f"missing log parts: {', '.join(missing)}")
    header, rows = None, {}
    for p in parts:
        lines = p.read_text().splitlines()
        if not lines:
            continue
        h = lines[0].split("\t")
        if header is None:
            header = h
        elif h != header:
            raise ValueError(f"{p}: columns differ from the other parts")
        for ln in lines[1:]:
            if ln.strip():
                rows.setdefault(int(ln.split("\t", 1)[0]), ln)
    if header is None:
        raise ValueError("no rows in the log parts")
    if settings is None:
        meta = Path(str(parts[0]) + ".json")
        settings = json.loads(meta.read_text()) if meta.exists() else None
    written = 0
    with LogWriter(out, header, settings) as log:
        for idx in sorted(rows):
            if idx not in log.done:
                log.f.write(rows[idx] + "\n")
                log.done.add(idx)
                written += 1
        log.f.flush()
    return written
