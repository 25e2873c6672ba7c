"""What this machine can do: memory (cgroup limits included), CPU cores and GPUs, and the safe defaults that follow.

A free Hugging Face CPU Space has 2 vCPU and 16 GB; the app reads the machine and picks calibration sizes and a
healing preset that finish there, and refuses models that would not fit instead of being killed by the OOM killer.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
SAFETY_MARGIN = 0.85  # use at most this fraction of the available memory
_NO_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a huge number (~9.2e18)


def format_bytes(n: float) -> str:
    """``14_200_000_000 -> '14.2 GB'`` (decimal units, as in a shop and on the Hugging Face Hub)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory(root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """``(limit, usage)`` in bytes of this process's memory cgroup (v2 or v1), or None when there is no limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)  # v2 writes "max" when unlimited: not a number, so None
        if limit is not None and limit < _NO_LIMIT:
            return limit, _read_int(root / usage_file) or 0
    return None


def cgroup_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max`` or v1 CFS quota), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    quota_us, period_us = _read_int(root / "cpu/cpu.cfs_quota_us"), _read_int(root / "cpu/cpu.cfs_period_us")
    if quota_us and period_us:  # v1 writes -1 when unlimited: not read as a number
        return quota_us / period_us
    return None


def _gpus() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return [dict(name=p.name, total_memory_bytes=int(p.total_memory)) for p in props]


def machine_info(root: Path = CGROUP_ROOT) -> dict:
    """Memory, cores and GPUs of this machine as the process sees them (container limits applied).

    Returns ``dict(total_memory_bytes, available_memory_bytes, cpus, gpus=[dict(name, total_memory_bytes)])``.
    """
    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    limits = cgroup_memory(root)
    if limits is not None and limits[0] < total:
        limit, usage = limits
        total, available = limit, max(0, min(available, limit - usage))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(root)
    if quota is not None:
        cpus = max(1, min(cpus, int(quota)))
    return dict(total_memory_bytes=total, available_memory_bytes=available, cpus=cpus, gpus=_gpus())


def _uses_gpu(info: dict, device: str | None) -> bool:
    return bool(info["gpus"]) and (device is None or not str(device).startswith("cpu"))


def memory_budget(info: dict | None = None, device: str | None = None) -> int:
    """Bytes a model may use here: all GPUs together (``device_map="auto"``), else the available RAM."""
    info = info if info is not None else machine_info()
    if _uses_gpu(info, device):
        return sum(g["total_memory_bytes"] for g in info["gpus"])
    return info["available_memory_bytes"]


def safe_defaults(info: dict | None = None) -> dict:
    """Calibration and healing settings that finish on this machine in minutes, and the largest model to allow.

    Returns ``dict(n_samples, max_length, batch_size, heal_preset, max_model_bytes)``. A pruning session holds the
    base model and a pruned copy (plus LoRA gradients while healing), hence a model may use ~40% of the RAM on CPU.
    """
    info = info if info is not None else machine_info()
    gpu_bytes = sum(g["total_memory_bytes"] for g in info["gpus"])
    if gpu_bytes >= 20e9:
        return dict(n_samples=256, max_length=1024, batch_size=8, heal_preset="paper",
                    max_model_bytes=int(gpu_bytes * 0.45))
    if gpu_bytes > 0:
        return dict(n_samples=128, max_length=512, batch_size=8, heal_preset="quick-cpu",
                    max_model_bytes=int(gpu_bytes * 0.45))
    available, cpus = info["available_memory_bytes"], info["cpus"]
    big_cpu = cpus >= 8 and available >= 32e9
    return dict(n_samples=64 if big_cpu else 32, max_length=256 if big_cpu else 128, batch_size=8 if big_cpu else 4,
                heal_preset="quick-cpu", max_model_bytes=int(available * 0.4))


def check_fits(required_bytes: int, info: dict | None = None, what: str = "model", device: str | None = None) -> None:
    """Raise ValueError with both sizes when ``required_bytes`` exceeds the memory budget here (with a margin)."""
    if required_bytes < 0:
        raise ValueError(f"required_bytes must be >= 0, got {required_bytes}")
    info = info if info is not None else machine_info()
    budget = memory_budget(info, device)
    where = "GPU memory" if _uses_gpu(info, device) else "RAM"
    if required_bytes > budget * SAFETY_MARGIN:
        raise ValueError(
            f"the {what} needs {format_bytes(required_bytes)}, this machine has {format_bytes(budget)} {where} "
            f"available (at most {SAFETY_MARGIN:.0%} of it is used); pick a smaller model, load it in 4-bit, or run "
            f"on a larger machine (see the README: running on GPUs)")
