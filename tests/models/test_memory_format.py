import subprocess
import sys

import pytest
import torch
from torch import nn

from taskdistill.models import create_student
from taskdistill.models.memory_format import to_channels_last, unsafe_in_channels_last


@pytest.mark.parametrize(("conv", "unsafe"), [
    (nn.Conv2d(3, 48, 1, stride=2), True),        # FastViT's stem branch: crashes on this machine (AVX2)
    (nn.Conv2d(7, 16, 1, stride=(1, 2)), True),
    (nn.Conv2d(12, 48, 1, stride=2), True),       # below the AVX-512 kernel's 16-channel block
    (nn.Conv2d(1, 48, 1, stride=2), True),
    (nn.Conv2d(48, 48, 1, stride=2, groups=12), True),  # 4 in-channels per group
    (nn.Conv2d(3, 48, 1, stride=1), False),       # not strided
    (nn.Conv2d(3, 48, 3, stride=2), False),       # not 1x1
    (nn.Conv2d(16, 48, 1, stride=2), False),
])
def test_unsafe_convolutions_are_the_strided_1x1_ones_with_few_input_channels(conv, unsafe):
    assert unsafe_in_channels_last(conv) is unsafe


def test_to_channels_last_keeps_only_the_unsafe_convolutions_contiguous():
    model = nn.Sequential(nn.Conv2d(3, 48, 1, stride=2), nn.Conv2d(48, 16, 3, padding=1))
    assert to_channels_last(model) == ["0"]
    assert model[0].weight.stride() == (3, 1, 1, 1)  # a 1x1 weight is only unambiguous with these strides
    assert model[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[1].weight.is_contiguous()


CHILD = r"""
import torch
from torch import nn
from taskdistill.models.memory_format import to_channels_last
torch.set_num_threads(1)
conv = nn.Sequential(nn.Conv2d(3, 48, 1, stride=2, bias=False), nn.Conv2d(48, 8, 3, padding=1))
to_channels_last(conv)
x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
for _ in range(30):
    conv(x).sum().backward()
print("ok")
"""


def test_the_convolution_that_crashed_training_now_trains():
    # In plain channels_last this aborts the process on torch 2.14.1 (benchmarks/conv_channels_last_crash.py),
    # so it runs in a child: a regression fails this test instead of killing the test session.
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_fastvit_student_keeps_its_stem_branch_contiguous():
    model = create_student("fastvit_t8", num_classes=4, input_size=32)
    assert model.stem[0].conv_scale.conv.weight.stride() == (3, 1, 1, 1)
