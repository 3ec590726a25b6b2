import pytest
import torch

from taskdistill.data.views import normalize, render
from taskdistill.models.base import Preprocess
from taskdistill.reprogram.visual_prompt import FullImagePrompt, PaddingPrompt

PRE = Preprocess(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), input_size=16)


def images(n: int = 3, size: int = 20) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_padding_prompt_parameters_live_in_the_border_only():
    prompt = PaddingPrompt(16, PRE, pad=3)
    assert prompt.image_size == 10
    assert prompt.num_parameters == 3 * (16 * 16 - 10 * 10)
    with pytest.raises(ValueError):
        PaddingPrompt(16, PRE, pad=8)
    with pytest.raises(ValueError):
        PaddingPrompt(16, PRE, pad=0)


def test_padding_prompt_changes_only_the_border_and_the_centre_is_the_normalised_image():
    x01 = render(images(), 20)
    prompt = PaddingPrompt(16, PRE, pad=3)
    plain = prompt(x01)
    with torch.no_grad():
        for p in prompt.parameters():
            p.normal_()
    prompted = prompt(x01)
    assert prompted.shape == (3, 3, 16, 16)
    border = torch.ones(16, 16, dtype=torch.bool)
    border[3:13, 3:13] = False
    diff = (prompted - plain).abs()
    assert bool((diff[..., ~border] == 0).all())
    assert bool((diff[..., border] > 0).all())
    expected_centre = normalize(render(images(), 10), PRE)  # image rendered straight at the inner size
    assert torch.equal(prompted[..., 3:13, 3:13], expected_centre)
    assert torch.equal(prompt(render(images(), 10)), prompted)  # already at inner size: no second resize
    frame = prompt.frame()
    assert bool((frame[..., 3:13, 3:13] == 0).all())
    fill_value = normalize(torch.zeros(1, 3, 1, 1) + frame[..., :1, :1], PRE)  # top-left corner: fill 0 + frame
    assert torch.allclose(prompted[:, :, :1, :1], fill_value.expand(3, 3, 1, 1))


def test_padding_prompt_gradient_reaches_only_the_frame():
    prompt = PaddingPrompt(16, PRE, pad=2)
    prompt(render(images(), 20)).sum().backward()
    assert all(p.grad is not None and bool((p.grad != 0).all()) for p in prompt.parameters())


def test_full_image_prompt_starts_as_identity_and_adds_a_perturbation():
    x01 = render(images(), 20)
    prompt = FullImagePrompt(16, PRE)
    assert prompt.num_parameters == 3 * 16 * 16 and prompt.image_size == 16
    assert torch.equal(prompt(x01), normalize(render(images(), 16), PRE))
    with torch.no_grad():
        prompt.delta.fill_(0.1)
    std = torch.tensor(PRE.std).view(1, 3, 1, 1)
    assert torch.allclose(prompt(x01) - normalize(render(images(), 16), PRE), (0.1 / std).expand(3, 3, 16, 16),
                          atol=1e-5)
