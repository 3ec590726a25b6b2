"""The `tdmr` and `distill-linear-probe` methods end to end on tiny random models (CNN and ViT)."""

import copy

import pytest
import torch
from torch import nn

from taskdistill.config import RunConfig, load_config
from taskdistill.engine.compute import count_parameters
from taskdistill.errors import ConfigError
from taskdistill.kinds import Classification
from taskdistill.models.registry import create_model
from taskdistill.pipelines import methods as methods_mod
from taskdistill.pipelines.cell import Cell
from taskdistill.pipelines.sweep import run_sweep
from taskdistill.reprogram import MappedHead
from taskdistill.reprogram.stages import reprogram_teacher
from tests.conftest import make_cell, tiny_overrides

TDMR_FAST = [
    "tdmr.reprogram.epochs=2", "tdmr.reprogram.min_steps=0", "tdmr.reprogram.batch_size=6", "tdmr.ilm_period=1",
    "tdmr.distill.epochs=2", "tdmr.distill.batch_size=16", "tdmr.evaluate_teacher=true",
]


def tiny_cfg(shapes_dataset, tmp_path, *extra: str) -> RunConfig:
    train, test = shapes_dataset
    # the padding prompt (not the default `none` since issue 20): these tests count and check its parameters
    return load_config(RunConfig, None, tiny_overrides(train, test, tmp_path / "runs") + TDMR_FAST
                       + ["tdmr.prompt=padding", *extra])


_build = Classification.build_model


def tiny_vit_build(self, spec, num_classes: int, cfg) -> nn.Module:
    """`build_model` with a one-block ViT in place of a full-size one (config files cannot shrink a ViT)."""
    if spec.name.startswith("vit_"):
        return create_model(spec.name, num_classes, pretrained=False, input_size=spec.input_size,
                            img_size=spec.input_size, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    return _build(self, spec, num_classes, cfg)


def test_tdmr_leaves_the_teacher_bit_identical_and_accounts_for_its_compute(shapes_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg(shapes_dataset, tmp_path, "tdmr.label_mapping=ilm")  # cnn models, padding prompt, progressive
    seen: dict[str, dict[str, torch.Tensor]] = {}
    real = Cell.teacher

    def spy(cell: Cell, num_classes: int | None = None) -> nn.Module:
        teacher = real(cell, num_classes)
        seen["before"] = copy.deepcopy(teacher.state_dict())
        seen["teacher"] = teacher
        return teacher

    monkeypatch.setattr(Cell, "teacher", spy)
    cell = make_cell(cfg, tmp_path)
    rec = methods_mod.METHODS["tdmr"](cell).to_json()
    before, after = seen["before"], seen["teacher"].state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.endswith("running_mean") for k in before)
    assert seen["teacher"].num_classes == 1000 and rec["teacher_unchanged"]

    labeled, transfer = len(cell.data.labeled), len(cell.data.transfer)  # 12 labeled, 40 transfer images
    detail = rec["teacher_images_detail"]
    assert detail["reprogram_forward_backward"] == 2 * 2 * 6  # 2 epochs x 2 batches of 6
    assert detail["label_mapping_forward"] == labeled * (1 + rec["tdmr"]["remaps"]) and rec["tdmr"]["remaps"] == 3
    assert detail["proxy_cache_forward"] == 2 * transfer * 2  # source + target logits, 2 views each
    assert rec["teacher_images"] == sum(detail.values())
    assert rec["student_images"] == 2 * 2 * 16 + 8  # proxy distill (2 epochs x 2 batches) + finetune (1 batch)
    prompt_params = 3 * (16 * 16 - 12 * 12)  # pad = 16 // 8 = 2
    assert rec["trainable_params"] == prompt_params
    assert rec["trainable_fraction"] == pytest.approx(prompt_params / count_parameters(seen["teacher"]))
    assert rec["tdmr"]["bytes_per_view"] == {"source_logits": 64, "target_logits": 6}
    assert len(set(rec["tdmr"]["mapping"])) == 3 and 0 <= rec["reprogrammed_teacher_top1"] <= 1
    assert rec["params"] == count_parameters(cell.student())  # the saved student carries no proxy head


def test_tdmr_and_the_linear_probe_reference_run_in_a_sweep_with_a_vit(shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(Classification, "build_model", tiny_vit_build)
    cfg = tiny_cfg(shapes_dataset, tmp_path, "student.model.name=vit_tiny_patch16_224", "tdmr.schedule=joint")
    records = run_sweep(cfg, ["tdmr", "distill-linear-probe"], budgets=[3], seeds=[0], folder=tmp_path / "sweep")
    by = {r["method"]: r for r in records}
    assert by["tdmr"]["model"] == "vit_tiny_patch16_224" and len(by["tdmr"]["tdmr"]["mapping"]) == 3
    assert by["tdmr"]["tdmr"]["label_mapping"] == "linear-logits"  # the default: learned map on source logits
    assert by["tdmr"]["trainable_params"] == 3 * (16 * 16 - 12 * 12) + (1000 * 3 + 3)  # prompt + linear map
    lp = by["distill-linear-probe"]
    assert lp["teacher_images"] > 0 and lp["student_images"] > 0 and 0 < lp["trainable_fraction"] < 0.01
    assert not (tmp_path / "sweep" / "teachers").exists()  # the probed teacher is not stored as a finetuned one


def test_tdmr_with_a_vit_teacher_no_prompt_a_feature_map_and_one_shot(shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(Classification, "build_model", tiny_vit_build)
    cfg = tiny_cfg(shapes_dataset, tmp_path, "teacher.model.name=vit_tiny_patch16_224", "teacher.model.input_size=16",
                   "tdmr.prompt=none", "tdmr.label_mapping=linear-features", "tdmr.schedule=one-shot")
    rec = methods_mod.METHODS["tdmr"](make_cell(cfg, tmp_path)).to_json()
    assert rec["teacher_model"] == "vit_tiny_patch16_224" and rec["tdmr"]["mapping"] is None
    assert rec["trainable_params"] == 32 * 3 + 3  # only the linear map on the ViT's 32-d features
    assert rec["teacher_images_detail"]["label_mapping_forward"] == 0
    assert rec["teacher_images_detail"]["proxy_cache_forward"] == 40 * 2  # target logits only
    assert rec["tdmr"]["proxy_head_params"] == 0 and "source_logits" not in rec["tdmr"]["bytes_per_view"]


def test_no_prompt_and_a_fixed_map_train_nothing(shapes_dataset, tmp_path):
    cfg = tiny_cfg(shapes_dataset, tmp_path, "tdmr.prompt=none", "tdmr.label_mapping=flm")
    cell = make_cell(cfg, tmp_path)
    model, info = reprogram_teacher(cell.teacher(cfg.tdmr.source_classes), cell.data.labeled, cfg.tdmr, 0, cell.device)
    assert info["steps"] == info["train_images"] == info["trainable_params"] == 0
    assert info["teacher_images"] == info["label_mapping_images"] == len(cell.data.labeled)  # the FLM map only
    assert len(set(info["mapping"])) == 3 and isinstance(model.head, MappedHead)


def test_a_pad_that_does_not_fit_names_the_fix(shapes_dataset, tmp_path):
    # rejected when the config is read, before any work (config/ranges.py), naming both keys and the fix
    with pytest.raises(ConfigError, match=r"tdmr.pad=8, teacher.model.input_size=16: .*set tdmr.pad below half"):
        tiny_cfg(shapes_dataset, tmp_path, "tdmr.pad=8")
