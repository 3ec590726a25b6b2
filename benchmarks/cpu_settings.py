"""CPU settings taskdistill fixes by default, measured as ratios in one run.

Run: .venv/bin/python benchmarks/cpu_settings.py
(a) explicit torch.set_num_threads(n) vs torch's implicit default (same n reported), each in a fresh
    process: student training throughput (resnet10t, 32 px, batch 128);
(b) channels_last vs contiguous memory format, same process: teacher forward (lite2, 64 px) and student
    training throughput.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

CHILD = r"""
import json, os, sys, time, torch, torch.nn.functional as F, timm
if sys.argv[1] == "explicit":
    torch.set_num_threads(len(os.sched_getaffinity(0)))
m = timm.create_model("resnet10t", num_classes=10).to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 10, (128,))
for i in range(8):
    if i == 2: t = time.perf_counter()
    loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
print(json.dumps({"threads": torch.get_num_threads(), "img_s": 6 * 128 / (time.perf_counter() - t)}))
"""


def threads() -> dict[str, float]:
    out = {}
    for mode in ("implicit", "explicit"):
        res = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def memory_format() -> dict[str, float]:
    import timm

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    res = {}
    for fmt_name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        t = timm.create_model("tf_efficientnet_lite2", num_classes=10).eval().to(memory_format=fmt)
        x = torch.randn(256, 3, 64, 64).contiguous(memory_format=fmt)
        with torch.inference_mode():
            t(x)
            start = time.perf_counter()
            for _ in range(3):
                t(x)
            res[f"teacher_fwd_{fmt_name}"] = 3 * 256 / (time.perf_counter() - start)
        s = timm.create_model("resnet10t", num_classes=10).train().to(memory_format=fmt)
        opt = torch.optim.AdamW(s.parameters(), lr=1e-3)
        x, y = torch.randn(128, 3, 32, 32).contiguous(memory_format=fmt), torch.randint(0, 10, (128,))
        for i in range(8):
            if i == 2:
                start = time.perf_counter()
            loss = F.cross_entropy(s(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        res[f"student_train_{fmt_name}"] = 6 * 128 / (time.perf_counter() - start)
    return res


def main() -> None:
    th = threads()
    mf = memory_format()
    print(f"threads: implicit {th['implicit']['img_s']:.0f} img/s ({th['implicit']['threads']} reported), "
          f"explicit {th['explicit']['img_s']:.0f} img/s -> ratio {th['explicit']['img_s'] / th['implicit']['img_s']:.2f}x")
    print(f"teacher forward lite2@64: channels_last / contiguous = "
          f"{mf['teacher_fwd_channels_last'] / mf['teacher_fwd_contiguous']:.2f}x "
          f"({mf['teacher_fwd_channels_last']:.0f} vs {mf['teacher_fwd_contiguous']:.0f} img/s)")
    print(f"student train resnet10t@32: channels_last / contiguous = "
          f"{mf['student_train_channels_last'] / mf['student_train_contiguous']:.2f}x "
          f"({mf['student_train_channels_last']:.0f} vs {mf['student_train_contiguous']:.0f} img/s)")


if __name__ == "__main__":
    main()
