import pytest

from taskdistill.config import RunConfig, dump_yaml, load_config
from taskdistill.config.load import from_dict
from taskdistill.errors import ConfigError


def test_defaults_match_the_shipped_default_yaml():
    from taskdistill.cli.common import shipped_configs

    assert load_config(RunConfig, shipped_configs()["default"]) == RunConfig()


def test_yaml_then_overrides_merge_and_keep_other_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nteacher:\n  model: {input_size: 128}\ndistill: {temperature: 3}\n")
    cfg = load_config(RunConfig, f, ["distill.temperature=5", "student.model.name=mobilevitv2_050", "run.methods=scratch"])
    assert cfg.name == "x"
    assert cfg.teacher.model.input_size == 128
    assert cfg.teacher.model.name == "tf_efficientnet_lite2"  # not given: kept from the section's default
    assert cfg.distill.temperature == 5.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.student.model.name == "mobilevitv2_050"
    assert cfg.run.methods == ["scratch"]


def test_null_override_clears_optional_value():
    cfg = load_config(RunConfig, None, ["data.labels_per_class=null", "data.max_per_class=3"])
    assert cfg.data.labels_per_class is None and cfg.data.max_per_class == 3


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("distill.temperatur=3", "Did you mean 'temperature'"),
        ("techer.mode=finetune", "Did you mean 'teacher'"),
        ("teacher.mode=fine-tune", "not one of"),
        ("seed=abc", "expected an integer"),
        ("teacher.model.pretrained=maybe", "expected true or false"),
        ("distill", "must look like key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(RunConfig, None, [override])


def test_unknown_yaml_key_is_named_with_its_path(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  labels_per_klass: 5\n")
    with pytest.raises(ConfigError, match=r"data\.labels_per_klass.*Did you mean 'labels_per_class'"):
        load_config(RunConfig, f)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RunConfig, bad)


def test_dump_round_trips():
    import yaml

    cfg = load_config(RunConfig, None, ["seed=3", "distill.transfer.views=4"])
    assert from_dict(RunConfig, yaml.safe_load(dump_yaml(cfg))) == cfg


def test_a_stored_config_without_a_later_key_keeps_the_meaning_it_had():
    from taskdistill.config.load import from_stored, to_dict

    dumped = to_dict(load_config(RunConfig, None, []))
    assert dumped["distill"]["finetune_anchor"] == 1.0  # today's default: stage 3 keeps distilling
    del dumped["distill"]["finetune_anchor"]  # a sweep.yaml / checkpoint written before the key existed
    assert from_stored(RunConfig, dumped).distill.finetune_anchor == 0.0  # meant a plain stage 3
    assert from_dict(RunConfig, dumped).distill.finetune_anchor == 1.0  # a user's YAML gets today's default
    del dumped["distill"]["pseudo_label_anchor_lr"]  # before pseudo-label's stage 3 had its own rate
    assert from_stored(RunConfig, dumped).distill.pseudo_label_anchor_lr is None  # it took finetune_anchor_lr
    assert from_dict(RunConfig, dumped).distill.pseudo_label_anchor_lr == 1e-4


def test_config_differences_name_each_changed_leaf_and_override_text_sets_it_back():
    from taskdistill.config.load import config_differences, override_text, to_dict

    old = load_config(RunConfig, None, ["distill.train.clip_grad_norm=1.0", "data.labels_per_class=5"])
    new = load_config(RunConfig, None, ["data.labels_per_class=7"])
    differs = config_differences(to_dict(old), to_dict(new))
    assert differs == [("data.labels_per_class", 5, 7), ("distill.train.clip_grad_norm", 1.0, None)]
    assert config_differences(to_dict(new), to_dict(new)) == []
    back = load_config(RunConfig, None, ["data.labels_per_class=7", *(override_text(k, a) for k, a, _ in differs)])
    assert to_dict(back) == to_dict(old)
    ensemble = [{"name": "tf_efficientnet_lite0", "pretrained": True, "input_size": 64}]
    assert load_config(RunConfig, None, [override_text("teacher.ensemble", ensemble)]).teacher.ensemble[0].name == \
        "tf_efficientnet_lite0"
