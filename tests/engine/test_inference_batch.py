"""CPU inference batches are capped by pixels above 128 px; the outputs do not depend on the batch."""

from __future__ import annotations

import torch

from taskdistill.engine.batches import inference_batch_size
from taskdistill.engine.evaluate import predict_logits
from taskdistill.models import create_model


def test_cap_by_pixels_on_the_cpu_only() -> None:
    assert inference_batch_size(128, 64) == 128 and inference_batch_size(128, 128) == 128
    assert inference_batch_size(128, 224) == 41 and inference_batch_size(128, 256) == 32
    assert inference_batch_size(4, 2048) == 1
    assert inference_batch_size(128, 224, "cuda") == 128


def test_capped_batches_give_the_same_logits() -> None:
    model = create_model("resnet10t", 3, input_size=160).eval()
    images = torch.randint(0, 256, (9, 3, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    capped = predict_logits(model, images, batch_size=8, progress=False)  # 8 * 128^2 // 160^2 = 5 per batch
    one = torch.cat([predict_logits(model, images[i:i + 1], batch_size=1, progress=False) for i in range(9)])
    assert torch.allclose(capped, one, atol=1e-5)
