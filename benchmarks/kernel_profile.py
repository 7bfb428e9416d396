"""GPU kernel time of one piece of work, by kind of kernel, for the benchmarks' --profile options.

``profile_kernels(title, work, device)`` runs ``work()`` once under torch.profiler and returns a markdown
section: the total GPU kernel time, the time per kind (matrix products, flash attention, retention,
optimizer, everything else) and the 25 most expensive kernels. Kinds are told apart by kernel name
(``kernel_kind``); on a machine without CUDA the section is empty of kernels.
"""

from __future__ import annotations

import torch

OTHER = "other (elementwise, norms)"
KERNEL_KINDS = (("flash attention", ("flash",)),  # before the products: flash kernels' names hold "cutlass"
                ("matrix products", ("gemm", "gemv", "cutlass", "nvjet", "sm90_xmma", "cublas")),
                ("retention (Triton)", ("retention", "_chunk", "_scan", "_scores")),
                ("optimizer", ("adam", "multi_tensor")))


def kernel_kind(name: str) -> str:
    low = name.lower()
    if low.startswith("triton_"):  # inductor's fused kernels, named after every op they fuse ("chunk_retention" too)
        return OTHER
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), OTHER)


def profile_kernels(title: str, work, device: torch.device) -> str:
    """``work()`` once under torch.profiler: GPU time per kind of kernel and the 25 most expensive kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events) or 1.0
    kinds: dict[str, float] = {}
    for e in events:
        kind = kernel_kind(e.key)
        kinds[kind] = kinds.get(kind, 0.0) + e.self_device_time_total
    lines = [f"## {title}: {total / 1e3:.3f} ms of GPU kernels", ""]
    for kind, t in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"- {kind}: {t / 1e3:.3f} ms ({100 * t / total:.0f}%)")
    lines += ["", "| kernel | calls | ms | share |", "|---|---:|---:|---:|"]
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:25]:
        lines.append(f"| {e.key[:90]} | {e.count} | {e.self_device_time_total / 1e3:.3f} | "
                     f"{100 * e.self_device_time_total / total:.1f}% |")
    return "\n".join(lines) + "\n"
