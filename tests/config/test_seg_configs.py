"""The shipped segmentation configs load, typed, with segmentation settings."""

from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.config.schema import SegmentationConfig


def test_shipped_segmentation_configs_load():
    for name in ("seg-composite", "seg-tiny"):
        cfg = load_config(RunConfig, shipped_configs()[name])
        assert cfg.task == "segmentation" and cfg.data.dataset == "fashion-composite"
        assert cfg.teacher.model.pretrained and cfg.feature_distill.loss == "cosine"
    full = load_config(RunConfig, shipped_configs()["seg-composite"])
    assert full.segmentation.composite.canvas_size == 64 and full.segmentation.composite.train_images == 6000
    assert full.teacher.model.name == "tf_efficientnet_lite2" and full.student.model.input_size == 64


def test_classification_default_is_untouched_by_the_segmentation_section():
    cfg = RunConfig()
    assert cfg.task == "classification" and cfg.segmentation == SegmentationConfig()
