"""Distance from the machine's limit: FLOPs per image, this machine's matrix-multiply rate,
and each runtime's achieved GFLOP/s as a fraction of it.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one forward pass: 2 per
multiply-accumulate of convolutions, linear layers and matrix products (a 3x3 conv from Cin
to Cout channels on an Hout x Wout output: 2 * Cin * Cout * 9 * Hout * Wout, bias and
element-wise work - batch norm, activations, pooling, upsampling - not counted). That is the
usual convention, and it makes "achieved GFLOP/s" a lower bound of the work really done.

The machine's rate is measured INTERLEAVED with the model timings of the runtimes section
(one sample of each probe between every two model rounds), so both see the same share of a
busy machine, by four matrix-multiply probes with torch's thread count:
    mm_fp32           torch.mm, n = 2048 (17.2 GFLOP; MKL's sgemm)
    gemm_fp32_onednn  the same kind of GEMM through oneDNN (a 1x1 convolution, 1024 -> 1024
                      channels on 64 x 64 pixels, channels-last: 8.6 GFLOP), the library the
                      convolutions themselves use
    mm_bf16, gemm_bf16_onednn  the same in bfloat16
Measured here, MKL's sgemm reaches about half of oneDNN's rate on this AMD CPU (MKL takes a
slower code path on non-Intel processors), so "the machine's fp32 rate" is the HIGHER of the
two fp32 probes (the stricter yardstick), likewise for bf16. int8 runtimes are shown
against the fp32 rate only (their integer peak is not measured).

    python -m benchmarks --sections flops --quick true   # runs the runtimes section it needs
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from projects.core.bench import Section, Table, median, metric_key

MATMUL_N = 2048


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on `example` (2 per multiply-accumulate; see module doc)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops())


def conv2d_flops(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, batch: int = 1,
                 groups: int = 1) -> int:
    """The hand formula: 2 * Cin/groups * Cout * k * k * Hout * Wout per image."""
    return 2 * (c_in // groups) * c_out * kernel * kernel * h_out * w_out * batch


def matmul_fn(n: int = MATMUL_N, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> tuple[Callable[[], object], float]:
    """A callable doing one n x n x n torch.mm on `device` (waiting for a GPU to finish it),
    and its FLOPs (2 n^3)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.rand(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def run():
        torch.mm(a, b, out=out)
        sync()

    return run, 2.0 * n ** 3


def onednn_gemm_fn(channels: int = 1024, pixels: int = 64, dtype: torch.dtype = torch.float32
                   ) -> tuple[Callable[[], object], float]:
    """A GEMM through oneDNN: a 1x1 convolution (channels -> channels on pixels x pixels,
    channels-last), and its FLOPs (2 * channels^2 * pixels^2)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, channels, pixels, pixels, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.rand(channels, channels, 1, 1, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w)

    return run, 2.0 * channels * channels * pixels * pixels


def rate_probes(device: torch.device | str = "cpu") -> dict[str, tuple[Callable[[], object], float]]:
    """name -> (callable, FLOPs per call) of the probes of the machine's rate: four on a CPU, or
    the two fp32 ones on a CPU without bf16 instructions (an emulated 2048^3 bf16 mm takes ~20 s,
    and its rate is no limit anything is measured against there); on a GPU torch.mm in fp32
    and, where the GPU has it, bf16 (oneDNN is the CPU's library)."""
    from projects.core.device import native_bf16

    if torch.device(device).type == "cuda":
        probes = {"mm_fp32": matmul_fn(dtype=torch.float32, device=device)}
        if torch.cuda.is_bf16_supported():
            probes["mm_bf16"] = matmul_fn(dtype=torch.bfloat16, device=device)
        return probes
    probes = {"mm_fp32": matmul_fn(dtype=torch.float32), "gemm_fp32_onednn": onednn_gemm_fn(dtype=torch.float32)}
    if native_bf16():
        probes |= {"mm_bf16": matmul_fn(dtype=torch.bfloat16),
                   "gemm_bf16_onednn": onednn_gemm_fn(dtype=torch.bfloat16)}
    return probes


def summarise_probes(samples: dict[str, list[float]], flops: dict[str, float]) -> dict:
    """GFLOP/s per probe (median and best sample) and the fp32 / bf16 rates (the higher probe)."""
    out: dict = {"probes": {}}
    for name, values in samples.items():
        if values:
            out["probes"][name] = {"gflops": flops[name] / median(values) / 1e9,
                                   "gflops_best": flops[name] / min(values) / 1e9, "samples": len(values)}
    for dtype in ("fp32", "bf16"):
        rates = [v["gflops"] for k, v in out["probes"].items() if k.endswith(dtype) or f"_{dtype}_" in k]
        out[f"{dtype}_gflops"] = max(rates) if rates else float("nan")
    return out


def matmul_rate(n: int = MATMUL_N, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """GFLOP/s of an n x n torch.mm, median of `repeats` (stand-alone use)."""
    run, flops = matmul_fn(n, dtype)
    run()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return flops / median(samples) / 1e9


def _rate_table(sec: Section, peaks: dict, threads: int) -> float:
    """The probes' table and metrics; returns the fp32 rate the runtimes are measured against."""
    fp32, bf16 = peaks["fp32_gflops"], peaks["bf16_gflops"]
    rate = Table(f"This machine's matrix-multiply rate ({threads} threads; medians of samples "
                 "interleaved with the model timings)", ["probe", "GFLOP/s (median)", "GFLOP/s (best sample)", "samples"])
    labels = {"mm_fp32": f"torch.mm fp32 n={MATMUL_N} (MKL)", "gemm_fp32_onednn": "oneDNN GEMM fp32 (1x1 conv 1024ch, 64x64)",
              "mm_bf16": f"torch.mm bf16 n={MATMUL_N}", "gemm_bf16_onednn": "oneDNN GEMM bf16 (1x1 conv 1024ch, 64x64)"}
    for name, v in peaks["probes"].items():
        rate.add(labels.get(name, name), v["gflops"], v["gflops_best"], v["samples"])
        sec.metrics[metric_key("flops", "rate", name, "gflops")] = v["gflops"]
    if math.isnan(bf16):  # rate_probes leaves bf16 out where the CPU has no bf16 instructions
        rate.notes.append(f"machine's rate used below: fp32 {fp32:.0f} GFLOP/s (the higher fp32 probe); bf16 not "
                          "measured: this CPU has no bf16 instructions (emulated bf16 is tens of times slower)")
    else:
        rate.notes.append(f"machine's rate used below: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s (the higher "
                          f"probe of each dtype); bf16 / fp32 = {bf16 / fp32:.2f}x")
        sec.metrics["flops.machine_bf16_gflops"] = bf16
    sec.tables.append(rate)
    sec.metrics["flops.machine_fp32_gflops"] = fp32
    return fp32


def section(runtime_results: dict, quick: bool) -> Section:
    """The FLOPs table from the runtimes section's results (`benchmarks.runtimes.run`'s
    `results` attribute): FLOPs per image, the matmul rates measured beside them, and per
    runtime the achieved GFLOP/s (single image and batched) and its fraction of the rate."""
    sec = Section("flops")
    fp32 = _rate_table(sec, runtime_results["peak"], runtime_results["threads"])
    bf16, size = runtime_results["peak"]["bf16_gflops"], runtime_results["size"]

    counts = Table(f"FLOPs per image ({size}x{size} input; FlopCounterMode: conv/linear/matmul, 2 per MAC)",
                   ["model", "GFLOP / image", "params"])
    for key, res in runtime_results["models"].items():
        counts.add(res["label"], res["flops"] / 1e9, res["params"])
        sec.metrics[metric_key("flops", key, "gflop_per_image")] = res["flops"] / 1e9
    sec.tables.append(counts)

    table = Table("Achieved GFLOP/s per runtime, as a fraction of the machine's GEMM rate",
                  ["model", "runtime", "GFLOP/s (1 image)", "% of fp32 rate", "GFLOP/s (batch)", "% of fp32 rate (batch)",
                   "% of bf16 rate (batch)"])
    for key, res in runtime_results["models"].items():
        flops = res["flops"]
        best_name, best_frac = None, -1.0
        for name, v in res["variants"].items():
            if v.get("error"):
                continue
            single = flops / v["single_p50_s"] / 1e9 if v.get("single_p50_s") else float("nan")
            batched = flops / v["batch_per_image_s"] / 1e9 if v.get("batch_per_image_s") else float("nan")
            is_bf16 = "bf16" in name
            table.add(res["label"], name, single, 100 * single / fp32, batched, 100 * batched / fp32,
                      100 * batched / bf16 if is_bf16 else None)
            sec.metrics[metric_key("flops", key, name, "gflops_single")] = single
            sec.metrics[metric_key("flops", key, name, "gflops_batch")] = batched
            sec.metrics[metric_key("flops", key, name, "fraction_fp32_mm_batch")] = batched / fp32
            if batched / fp32 > best_frac:
                best_name, best_frac = name, batched / fp32
        if best_name is not None:
            sec.headline.append(f"{res['label']}: {best_name} reaches {100 * best_frac:.0f}% of this machine's "
                                f"fp32 GEMM rate ({fp32:.0f} GFLOP/s), batched")
    table.notes.append("GFLOP/s = counted FLOPs per image / measured seconds per image (median); "
                       "element-wise work is not counted, so these are lower bounds.")
    table.notes.append("int8 runtimes do the same work in int8 arithmetic: their % of the fp32 rate can exceed 100.")
    sec.tables.append(table)
    if quick:
        sec.headline.append(f"quick mode: {size}x{size} inputs (full run: 256x256)")
    return sec
