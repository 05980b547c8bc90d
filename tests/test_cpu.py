"""The CPU path: glibc's malloc keeps the memory a step frees, so the next step does not page-fault it in again;
--dtype auto takes bf16 autocast where the CPU multiplies bf16 in hardware, and says so; the KV cache takes
the dtype whose attention kernel is the faster one."""

import subprocess
import sys

import pytest
import torch

from gptkit import cpu, hardware, sampling
from helpers import ROOT, SMALL_ANY_DTYPE

# what a training step does to the allocator: large buffers allocated, written and freed, step after step
STEPS = """
import resource, sys, torch
import gptkit.cpu
if sys.argv[1] == "kept":
    assert gptkit.cpu.keep_freed_memory()
faults = []
for _ in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    logits, grads = torch.ones(2**25), torch.ones(2**24) * 2  # 128 MiB and 64 MiB
    del logits, grads
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[-12:])[6])  # a typical step once the heap has settled (now and then one still faults)
"""


@pytest.mark.slow  # two processes of training steps
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_malloc_stops_the_page_faults_of_a_step_s_large_buffers():
    faults = {how: int(subprocess.run([sys.executable, "-c", STEPS, how], cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout) for how in ("default", "kept")}
    assert faults["default"] > 40_000  # 192 MiB of 4 KiB pages (and a temporary) faulted in again every step
    assert faults["kept"] < faults["default"] / 10  # after the first steps, the freed blocks are reused


@pytest.mark.parametrize("cpuinfo, unit", [
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n", "amx_bf16"),  # Sapphire Rapids
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n", "avx512_bf16"),  # Cooper Lake, Zen 4
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n", None),  # AVX-512 without bf16
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", "bf16"),  # ARM Neoverse V1
    ("processor\t: 0\nFeatures\t: fp asimd\n", None),
])
def test_the_bf16_matmul_unit_is_read_from_cpuinfo(tmp_path, cpuinfo, unit):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert cpu.bf16_matmul_unit(str(tmp_path / "cpuinfo")) == unit
    assert cpu.bf16_matmul_unit(str(tmp_path / "missing")) is None  # macOS, Windows: float32


def test_auto_dtype_follows_the_cpu_and_the_trainer_says_which(data, tmp_path, capsys, monkeypatch):
    import train_gpt2 as tg

    expected = torch.bfloat16 if cpu.bf16_matmul_unit() else torch.float32
    assert hardware.compute_dtype("cpu") == expected
    assert hardware.compute_dtype("cpu", "float32") == torch.float32
    made, real = [], torch.autocast

    def autocast(device_type, dtype, enabled):  # the trainer's autocast, as it is made
        made.append(dtype if enabled else torch.float32)
        return real(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(torch, "autocast", autocast)
    one_step = ["--data-dir", data, *SMALL_ANY_DTYPE, "--max-steps", "1", "--eval-interval", "0"]
    assert tg.main([*one_step, "--out-dir", str(tmp_path / "a")]) == 0
    assert made == [expected]
    line = hardware.describe(hardware.probe("cpu"), hardware.decide(hardware.probe("cpu")))
    out = capsys.readouterr().out
    assert line in out and out.count("device: CPU") == 1
    assert tg.main([*one_step, "--out-dir", str(tmp_path / "b"), "--dtype", "float32"]) == 0
    assert made[1:] == [torch.float32] and "| float32 |" in capsys.readouterr().out


@pytest.mark.parametrize("weights, unit, device, expected", [
    (torch.float32, "amx_bf16", "cpu", torch.float32),
    (torch.bfloat16, "amx_bf16", "cpu", torch.bfloat16),  # AMX: the bf16 attention kernel is the faster one
    (torch.bfloat16, "avx512_bf16", "cpu", torch.float32),  # without tiles the fp32 kernel is 3 to 6x faster
    (torch.bfloat16, None, "cpu", torch.float32),
    (torch.bfloat16, None, "cuda", torch.bfloat16),
])
def test_the_kv_cache_dtype_follows_the_cpu_s_attention_kernel(monkeypatch, weights, unit, device, expected):
    monkeypatch.setattr(cpu, "bf16_matmul_unit", lambda: unit)
    assert sampling.cache_dtype(weights, torch.device(device)) == expected
