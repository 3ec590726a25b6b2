"""The shared batched-inference loop: same outputs as a plain loop, precision, the `auto` batch size on CPU."""

from __future__ import annotations

import torch

from taskdistill.data.views import model_input
from taskdistill.engine.batches import inference_batch_size
from taskdistill.engine.evaluate import evaluate, predict_logits
from taskdistill.engine.inference import AUTO_START, auto_batch_size, batched_inference
from taskdistill.models.registry import create_model


def images(n: int = 21) -> torch.Tensor:
    return torch.randint(0, 255, (n, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet10t", 3, input_size=16).eval()


def test_predict_logits_in_fp32_equals_a_plain_loop() -> None:
    m, x = model(), images()
    with torch.inference_mode():
        expected = torch.cat([m(model_input(x[i:i + 8], m.preprocess)) for i in range(0, len(x), 8)])
    assert torch.equal(predict_logits(m, x, batch_size=8), expected)


def test_prefetch_depth_does_not_change_outputs() -> None:
    m, x = model(), images()

    def forward(b: torch.Tensor, views: object) -> torch.Tensor:
        return m(model_input(b, m.preprocess))

    a = batched_inference(forward, x, 5, prefetch=0)
    b = batched_inference(forward, x, 5, prefetch=3)
    assert torch.equal(a, b) and a.shape == (21, 3) and a.dtype == torch.float32


def test_bf16_inference_is_close_to_fp32_and_returns_float32() -> None:
    m, x = model(), images()
    ref = predict_logits(m, x, batch_size=8)
    got = predict_logits(m, x, batch_size=8, precision="bf16")
    assert got.dtype == torch.float32 and not torch.equal(got, ref)
    assert torch.allclose(got, ref, atol=0.1, rtol=0.1)
    metrics = evaluate(m, x, torch.arange(21) % 3, ["a", "b", "c"], batch_size=8, precision="bf16")
    assert metrics["num_images"] == 21


def test_auto_batch_size_on_cpu_is_the_cpu_rule() -> None:
    m = model()
    assert auto_batch_size(m, lambda b, v: m(b), (3, 20, 20), "cpu") == inference_batch_size(AUTO_START, 16, "cpu")
    assert predict_logits(m, images(), batch_size="auto").shape == (21, 3)
