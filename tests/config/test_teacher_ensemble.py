"""`teacher.ensemble`: a list of model sections from YAML or `--set`, checked before any work."""

import pytest
import yaml

from taskdistill.config import RunConfig, dump_yaml, load_config
from taskdistill.config.load import from_dict
from taskdistill.config.schema import ModelConfig
from taskdistill.errors import ConfigError
from taskdistill.kinds import kind_of

LITES = "[{name: tf_efficientnet_lite0, pretrained: true, input_size: 64}, {name: tf_efficientnet_lite1, pretrained: true}]"


def test_default_is_one_teacher():
    assert RunConfig().teacher.ensemble == []


def test_set_and_yaml_give_typed_members_that_round_trip(tmp_path):
    cfg = load_config(RunConfig, None, [f"teacher.ensemble={LITES}"])
    assert cfg.teacher.ensemble == [ModelConfig("tf_efficientnet_lite0", True, input_size=64),
                                    ModelConfig("tf_efficientnet_lite1", True)]
    f = tmp_path / "c.yaml"
    f.write_text("teacher:\n  ensemble:\n    - {name: tf_efficientnet_lite0, pretrained: true, input_size: 64}\n"
                 "    - name: tf_efficientnet_lite1\n      pretrained: true\n")
    assert load_config(RunConfig, f) == cfg
    assert from_dict(RunConfig, yaml.safe_load(dump_yaml(cfg))) == cfg
    assert load_config(RunConfig, f, ["teacher.ensemble=[]"]).teacher.ensemble == []


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("teacher.ensemble=[{name: resnet10t, input_sise: 32}]",
         r"unknown config key 'teacher\.ensemble\[0\]\.input_sise'.*Did you mean 'input_size'"),
        ("teacher.ensemble=[{name: resnet10t, input_size: 32}, {name: resnet10t, input_size: 8}]",
         r"teacher\.ensemble\[1\]\.input_size must be >= 16"),
        ("teacher.ensemble=[{name: resnet10t, pretrained: maybe}]", r"teacher\.ensemble\[0\]\.pretrained: expected true"),
        ("teacher.ensemble=tf_efficientnet_lite0", r"teacher\.ensemble\[0\]: expected a mapping of ModelConfig fields"),
        ("teacher.ensemble=[{name: tf_efficientnet_lite9}]",
         r"teacher\.ensemble=\[\{name: tf_efficientnet_lite9\}\]: a member names a model timm does not know"),
        ("teacher.ensemble=[{name: tf_efficientnet_lite2, pretrained: true, input_size: 64}]",
         r"a member repeats teacher\.model.*drop the repeat from teacher\.ensemble"),
    ],
)
def test_bad_members_are_named_with_the_fix(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(RunConfig, None, [override])


def test_segmentation_and_tdmr_refuse_an_ensemble_before_any_work(tmp_path):
    ens = "teacher.ensemble=[{name: resnet10t}]"
    with pytest.raises(ConfigError, match=r"run\.methods=\[task-oriented, tdmr\]: tdmr .* teacher\.ensemble"):
        load_config(RunConfig, None, [ens, "run.methods=task-oriented,tdmr"])
    assert load_config(RunConfig, None, ["run.methods=task-oriented,tdmr"]).teacher.ensemble == []
    cfg = load_config(RunConfig, None, [ens, "task=segmentation", "data.dataset=fashion-composite",
                                        f"data.root={tmp_path / 'nothing-here'}"])
    with pytest.raises(ConfigError, match="teacher.ensemble is supported for task: classification"):
        kind_of(cfg).prepare(cfg)  # the kind refuses it before reading any data
