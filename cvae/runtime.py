"""Device, precision, seeding and processes: the same code path on CPU and CUDA, in one process or
many. (Checkpoints: `cvae.checkpoints`.)"""
from __future__ import annotations

import contextlib
import ctypes
import os
import random
import warnings
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def select_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_model(model: nn.Module, device: torch.device,
                  compile_: Callable[[nn.Module], list[nn.Module]] | None = None) -> nn.Module:
    """Move to `device` with channels_last weights (cuDNN's and oneDNN's fastest layout: 10-25%
    off a CPU step at the default sizes); with `compile_` (the track's `compiled_modules`),
    compile the parts it names, the convolutional ones where nearly all the time goes."""
    model = model.to(device, memory_format=torch.channels_last)
    for module in compile_(model) if compile_ else []:
        module.compile()
    return model


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process. Under `torchrun` (WORLD_SIZE > 1) joins the
    process group: NCCL with one GPU per process (LOCAL_RANK), gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, select_device()
    if torch.cuda.is_available():
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            raise RuntimeError(
                f"torchrun started more processes on this machine than it has GPUs ({gpus}): "
                f"use --nproc_per_node {gpus}, or CUDA_VISIBLE_DEVICES= to train on the CPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), world, device


def reuse_freed_memory() -> bool:
    """On glibc, serve large allocations from the heap and keep freed memory for reuse.

    By default glibc maps every allocation above its mmap threshold (at most 32 MB) fresh from
    the kernel and unmaps it when freed. A CPU training step allocates and frees activations of
    that size many times, and zero-filling the fresh pages cost more than a third of a
    teacher-forced step at the default sizes (`benchmarks/cpu_allocator.py`). Returns whether
    the setting took (False off glibc, where nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


# Device types whose models run under bf16 autocast; `precision` sets it for a run.
BF16_DEVICES = {"cuda"}


def autocast(device: torch.device):
    """bf16 autocast on the `BF16_DEVICES`; plain fp32 elsewhere."""
    if device.type in BF16_DEVICES:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere oneDNN emulates
    bf16, slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch >= 2.1
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


@contextlib.contextmanager
def precision(mode: str):
    """Within: `autocast` regions run in bf16 on CUDA (`auto`), on every device (`bf16`), or
    nowhere (`fp32`). On a CPU bf16 is opt-in: only CPUs with native bf16 gain from it, and it
    makes the numbers depend on the machine (README, "Speed and scale")."""
    global BF16_DEVICES
    before = BF16_DEVICES
    BF16_DEVICES = {"auto": {"cuda"}, "bf16": {"cuda", "cpu"}, "fp32": set()}[mode]
    if mode == "bf16" and not cpu_has_bf16() and not torch.cuda.is_available():
        warnings.warn("train.precision: bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) "
                      "is emulated, slower than fp32", stacklevel=3)
    try:
        yield
    finally:
        BF16_DEVICES = before


def runs_in_bf16(device: torch.device) -> bool:
    return device.type in BF16_DEVICES


def seeded_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream depends on every key (e.g. seed, epoch, rank) and nothing else."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0]
    return torch.Generator(device).manual_seed(int(state))


def set_seed(seed: int, rank: int = 0) -> None:
    """Seed every generator we use; distributed ranks get distinct streams."""
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
