"""Every numeric config field has a range, checked when the config is loaded, before any work."""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path
from typing import Any

import pytest

from taskdistill.config import RunConfig, load_config
from taskdistill.config.load import from_dict, to_dict
from taskdistill.config.ranges import Range, problems, range_of
from taskdistill.errors import ConfigError
from tests.conftest import tiny_overrides


def numeric_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, dataclasses.Field, bool]]:
    """(dotted key, field, is_int) of every int / float field (optional or not) of `cls`, recursively."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, f"{key}.")
            continue
        args = set(typing.get_args(tp)) - {type(None)} if typing.get_args(tp) else {tp}
        if args == {int} or args == {float}:
            out.append((key, f, args == {int}))
    return out


NUMERIC = numeric_fields()


def outside(r: Range, is_int: bool) -> list[Any]:
    """A value just below the range (where it has a lower bound) and one just above (an upper bound)."""
    step = 1 if is_int else 0.25
    values = []
    if r.low is not None:
        values.append(r.low if r.low_open else r.low - step)
    if r.high is not None:
        values.append(r.high if r.high_open else r.high + step)
    return [int(v) if is_int else v for v in values]


def test_the_walk_finds_the_numeric_fields_of_every_section():
    keys = {k for k, _, _ in NUMERIC}
    assert {"distill.temperature", "teacher.train.lr", "distill.transfer.views", "data.crop_pct",
            "segmentation.composite.min_scale", "tdmr.ramp_fraction", "eval_batch_size"} <= keys
    assert len(keys) > 60 and "teacher.model.pretrained" not in keys  # bools are not numbers


@pytest.mark.parametrize(("key", "f", "is_int"), NUMERIC, ids=[k for k, _, _ in NUMERIC])
def test_every_numeric_field_has_a_range_and_a_value_outside_it_is_rejected(key, f, is_int):
    r = range_of(f)
    assert r is not None, f"config field {key} has no range: declare one with ge/gt/within in config/schema.py"
    assert r.low is not None, f"config field {key} has no lower bound"
    for bad in outside(r, is_int):
        with pytest.raises(ConfigError) as err:
            load_config(RunConfig, None, [f"{key}={bad}"])
        line = next(ln for ln in str(err.value).splitlines() if key in ln)
        assert f"{key} must be {r.describe()}" in line and f"got {bad:g}" in line and "try " in line


def test_defaults_and_shipped_configs_are_in_range():
    from taskdistill.cli.common import shipped_configs

    assert problems(RunConfig()) == []
    for path in shipped_configs().values():
        load_config(RunConfig, path)  # raises on any problem


def test_message_names_key_range_value_what_and_a_fix():
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, ["distill.temperature=0"])
    assert str(err.value) == ("distill.temperature must be > 0, got 0 (the softmax temperature; "
                              "try distill.temperature=2)")
    with pytest.raises(ConfigError, match=r"teacher\.probe\.epochs must be >= 0, got -1 .*try teacher\.probe\."
                                          r"epochs=10\)"):
        load_config(RunConfig, None, ["teacher.probe.epochs=-1"])  # the fix is this section's own default
    with pytest.raises(ConfigError, match=r"data\.max_per_class must be >= 1 or null, got 0 .*try data\."
                                          r"max_per_class=null"):
        load_config(RunConfig, None, ["data.max_per_class=0"])


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match=r"distill\.train\.lr must be a finite number > 0"):
        load_config(RunConfig, None, [f"distill.train.lr={value}"])


def test_all_problems_are_reported_in_one_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("distill: {temperature: 0, transfer: {views: 0}}\nseed: abc\ndata: {crop_pct: 1.5, labels: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, f, ["teacher.train.batch_size=0"])
    text = str(err.value)
    assert text.startswith("6 problems in the config:")
    for fragment in ("distill.temperature must be > 0", "distill.transfer.views must be >= 1",
                     "seed: expected an integer", "data.crop_pct must be in (0, 1]", "unknown config key 'data.labels'",
                     "teacher.train.batch_size must be >= 1"):
        assert fragment in text


def test_rules_across_fields():
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, ["segmentation.composite.min_items=4", "segmentation.composite.min_scale=0.7"])
    text = str(err.value)
    assert "segmentation.composite.min_items=4, segmentation.composite.max_items=3: min_items must be <= max_items" in text
    assert "segmentation.composite.min_scale=0.7, segmentation.composite.max_scale=0.65" in text
    with pytest.raises(ConfigError, match=r"tdmr\.pad=32, teacher\.model\.input_size=64: .*below half"):
        load_config(RunConfig, None, ["tdmr.prompt=padding", "tdmr.pad=32"])
    assert load_config(RunConfig, None, ["tdmr.prompt=padding", "tdmr.pad=31"]).tdmr.pad == 31
    assert load_config(RunConfig, None, ["tdmr.pad=32"]).tdmr.pad == 32  # the default prompt (none) has no frame
    assert load_config(RunConfig, None, ["tdmr.pad=32", "tdmr.prompt=full"]).tdmr.pad == 32  # no frame: no rule
    with pytest.raises(ConfigError, match=r"tdmr\.source_classes=0, tdmr\.label_mapping=linear-logits"):
        load_config(RunConfig, None, ["tdmr.source_classes=0"])
    assert load_config(RunConfig, None, ["tdmr.source_classes=0", "tdmr.label_mapping=linear-features"])


def test_boundaries_inside_the_range_are_accepted():
    cfg = load_config(RunConfig, None, ["distill.train.epochs=0", "data.crop_pct=1", "tdmr.ramp_fraction=0",
                                        "tdmr.joint_weight=1", "data.label_fraction=1", "teacher.model.drop_rate=0",
                                        "distill.transfer.max_images=null", "data.val_per_class=0"])
    assert cfg.distill.train.epochs == 0 and cfg.data.crop_pct == 1.0 and cfg.distill.transfer.max_images is None


def test_stored_configs_are_checked_too():
    data = to_dict(RunConfig())
    data["distill"]["temperature"] = -1.0
    with pytest.raises(ConfigError, match=r"distill\.temperature must be > 0, got -1"):
        from_dict(RunConfig, data)


# --- through the command line: rejected at load time, no traceback, no run folder --------------------------

BAD_VALUES = [
    "distill.temperature=0", "teacher.train.epochs=-1", "distill.train.batch_size=0", "distill.transfer.views=0",
    "distill.transfer.max_images=0", "student.finetune.lr=0", "teacher.train.label_smoothing=1",
    "student.model.input_size=4", "data.crop_pct=1.5", "data.load_size=4", "data.label_fraction=0",
    "teacher.probe.weight_decay=-0.1", "teacher.train.warmup_epochs=-1", "student.scratch.min_steps=-5",
    "data.val_per_class=-1", "eval_batch_size=0", "num_threads=0", "distill.topk=0", "teacher.model.drop_rate=1",
    "student.model.drop_path_rate=-0.5", "tdmr.ramp_fraction=1.5", "tdmr.joint_weight=-0.1", "tdmr.ilm_period=0",
    "segmentation.head_width=0", "segmentation.composite.min_scale=0.9", "distill.temperature=.nan",
]


@pytest.fixture(scope="module")
def cli_main():
    """`main`, with the command modules imported once (so the timing below is the command's own)."""
    from taskdistill.cli.main import build_parser, main

    build_parser()
    return main


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_run_rejects_a_bad_value_at_once(bad, cli_main, shapes_dataset, tmp_path: Path, capsys):
    train, test = shapes_dataset
    args = ["run"] + [a for o in tiny_overrides(train, test, tmp_path / "runs") for a in ("--set", o)]
    start = time.perf_counter()
    assert cli_main(args + ["--set", bad]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("taskdistill: error: ")
    assert bad.split("=")[0] in err
    assert not (tmp_path / "runs").exists()


def test_config_show_and_sweep_reject_bad_values_too(cli_main, capsys, tmp_path):
    assert cli_main(["config", "show", "--set", "distill.temperature=0"]) == 2
    assert "distill.temperature must be > 0" in capsys.readouterr().err
    assert cli_main(["sweep", "--set", "distill.transfer.views=0", "--out", str(tmp_path / "sw")]) == 2
    assert "distill.transfer.views must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "sw").exists()


def test_two_bad_values_on_the_command_line_are_both_named(cli_main, shapes_dataset, tmp_path, capsys):
    train, test = shapes_dataset
    args = ["run"] + [a for o in tiny_overrides(train, test, tmp_path / "runs") for a in ("--set", o)]
    assert cli_main(args + ["--set", "distill.temperature=0", "--set", "teacher.train.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert "2 problems in the config" in err
    assert "distill.temperature must be > 0, got 0" in err and "teacher.train.lr must be > 0, got -1" in err
