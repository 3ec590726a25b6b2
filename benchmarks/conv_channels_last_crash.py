"""Which convolutions crash in channels_last on this machine's torch, and does `to_channels_last` avoid them.

Run: .venv/bin/python benchmarks/conv_channels_last_crash.py [--quick]
Each configuration (in-channels, kernel, stride, memory format) trains one Conv2d(C, 48) for 30 steps
in a fresh process: a crash (abort, segfault, hang past 60 s) only kills that child. Then every
configuration that crashed raw is rerun through `taskdistill.models.memory_format.to_channels_last`.
Writes benchmarks/results/conv_channels_last_crash.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import torch

CHILD = r"""
import sys, torch
from torch import nn
from taskdistill.models.memory_format import to_channels_last
torch.set_num_threads(1)
cin, k, stride = (int(a) for a in sys.argv[1:4]); mode = sys.argv[4]
conv = nn.Sequential(nn.Conv2d(cin, 48, k, stride=stride, padding=k // 2, bias=False))
x = torch.randn(8, cin, 32, 32)
if mode == "channels_last":
    conv = conv.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
elif mode == "to_channels_last":
    to_channels_last(conv); x = x.contiguous(memory_format=torch.channels_last)
for _ in range(30):
    conv(x).sum().backward()
print("ok")
"""


def survives(cin: int, k: int, stride: int, mode: str) -> bool:
    """True when 30 training steps of that convolution finish cleanly in a child process."""
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(cin), str(k), str(stride), mode],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and r.stdout.strip() == "ok"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="in-channels 1-8 and 16, kernel 1 and 3, stride 2 only")
    args = ap.parse_args()
    cins = [1, 2, 3, 4, 5, 6, 7, 8, 16] if args.quick else [1, 2, 3, 4, 5, 6, 7, 8, 12, 16]
    kernels, strides = ([1, 3], [2]) if args.quick else ([1, 2, 3], [2, 3, 4])
    rows = []
    for cin, k, stride in itertools.product(cins, kernels, strides):
        row = {"in_channels": cin, "kernel": k, "stride": stride,
               "contiguous": survives(cin, k, stride, "contiguous"),
               "channels_last": survives(cin, k, stride, "channels_last")}
        if not row["channels_last"]:
            row["to_channels_last"] = survives(cin, k, stride, "to_channels_last")
        rows.append(row)
        print(json.dumps(row), flush=True)
    crashed = [r for r in rows if not r["channels_last"]]
    print(f"torch {torch.__version__}: {len(crashed)}/{len(rows)} configurations crash in channels_last "
          f"({sum(not r['contiguous'] for r in rows)} in contiguous); to_channels_last survives "
          f"{sum(r['to_channels_last'] for r in crashed)}/{len(crashed)} of them")
    out = Path(__file__).parent / "results" / "conv_channels_last_crash.json"
    out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
