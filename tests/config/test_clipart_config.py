"""The shipped `clipart-sweep` config (the second real dataset's method table) loads and validates."""

from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.data.sources import BUILTINS


def test_clipart_sweep_config_validates():
    cfg = load_config(RunConfig, shipped_configs()["clipart-sweep"])
    assert cfg.data.dataset == "clipart" and "clipart" in BUILTINS
    assert cfg.data.labels_per_class == 10 and cfg.distill.transfer.source == "unlabeled"
    assert (cfg.student.model.name, cfg.student.model.pretrained, cfg.student.model.input_size) == (
        "tf_efficientnet_lite0", False, 64)
    assert (cfg.teacher.model.name, cfg.teacher.model.pretrained, cfg.teacher.model.input_size) == (
        "tf_efficientnet_lite2", True, 96)
