"""Machine detection and safe defaults, with injected machine descriptions and fake cgroup folders."""

from __future__ import annotations

import pytest

from prune_core import system

GB = 10**9
FREE_SPACE = dict(total_memory_bytes=16 * GB, available_memory_bytes=15 * GB, cpus=2, gpus=[])
BIG_CPU = dict(total_memory_bytes=128 * GB, available_memory_bytes=120 * GB, cpus=32, gpus=[])
ONE_H100 = dict(total_memory_bytes=128 * GB, available_memory_bytes=120 * GB, cpus=16,
                gpus=[dict(name="NVIDIA H100", total_memory_bytes=80 * GB)])
SMALL_GPU = dict(total_memory_bytes=32 * GB, available_memory_bytes=30 * GB, cpus=8,
                 gpus=[dict(name="T4", total_memory_bytes=16 * GB)])


def test_machine_info_has_the_documented_keys_and_sane_values():
    info = system.machine_info()
    assert set(info) == {"total_memory_bytes", "available_memory_bytes", "cpus", "gpus"}
    assert 0 < info["available_memory_bytes"] <= info["total_memory_bytes"]
    assert info["cpus"] >= 1
    assert all(set(g) == {"name", "total_memory_bytes"} for g in info["gpus"])


def test_cgroup_v2_limit_caps_memory(tmp_path):
    (tmp_path / "memory.max").write_text(f"{2 * GB}\n")
    (tmp_path / "memory.current").write_text(f"{GB // 2}\n")
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert system.cgroup_memory(tmp_path) == (2 * GB, GB // 2)
    info = system.machine_info(tmp_path)
    assert info["total_memory_bytes"] == 2 * GB
    assert info["available_memory_bytes"] <= 2 * GB - GB // 2
    assert system.cgroup_cpus(tmp_path) == 1.5
    assert info["cpus"] == 1


def test_cgroup_v1_limit_and_unlimited_values(tmp_path):
    (tmp_path / "memory.max").write_text("max\n")  # v2 without a limit: fall through to v1
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{3 * GB}\n")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{GB}\n")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert system.cgroup_memory(tmp_path) == (3 * GB, GB)
    assert system.cgroup_cpus(tmp_path) is None
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 "no limit"
    assert system.cgroup_memory(tmp_path) is None
    assert system.cgroup_memory(tmp_path / "missing") is None


def test_free_cpu_space_gets_small_calibration_and_quick_preset():
    d = system.safe_defaults(FREE_SPACE)
    assert set(d) == {"n_samples", "max_length", "batch_size", "heal_preset", "max_model_bytes"}
    assert d["heal_preset"] == "quick-cpu"
    assert 16 <= d["n_samples"] <= 64 and 64 <= d["max_length"] <= 256
    assert d["max_model_bytes"] < FREE_SPACE["available_memory_bytes"] / 2


def test_defaults_grow_with_the_machine():
    small, big_cpu, gpu = (system.safe_defaults(i) for i in (FREE_SPACE, BIG_CPU, ONE_H100))
    assert big_cpu["n_samples"] * big_cpu["max_length"] > small["n_samples"] * small["max_length"]
    assert gpu["n_samples"] * gpu["max_length"] > big_cpu["n_samples"] * big_cpu["max_length"]
    assert gpu["heal_preset"] == "paper"
    assert system.safe_defaults(SMALL_GPU)["heal_preset"] == "quick-cpu"


def test_check_fits_accepts_small_and_names_both_sizes_when_too_big():
    system.check_fits(5 * GB, FREE_SPACE)
    with pytest.raises(ValueError, match=r"needs 14\.2 GB, this machine has 15\.0 GB RAM available"):
        system.check_fits(int(14.2 * GB), FREE_SPACE)  # 14.2 > 85% of 15
    with pytest.raises(ValueError, match="the calibration run needs"):
        system.check_fits(20 * GB, FREE_SPACE, what="calibration run")
    with pytest.raises(ValueError, match=">= 0"):
        system.check_fits(-1, FREE_SPACE)


def test_check_fits_counts_gpu_memory_unless_the_device_is_cpu():
    system.check_fits(60 * GB, ONE_H100)
    with pytest.raises(ValueError, match="GPU memory"):
        system.check_fits(70 * GB, ONE_H100)
    system.check_fits(90 * GB, ONE_H100, device="cpu")  # 120 GB of RAM
    assert system.memory_budget(ONE_H100, "cuda") == 80 * GB


def test_format_bytes():
    assert system.format_bytes(14_200_000_000) == "14.2 GB"
    assert system.format_bytes(512) == "512 B"
    assert system.format_bytes(2.5e12) == "2.5 TB"
