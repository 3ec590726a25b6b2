import pytest

from taskdistill.config import RunConfig, load_config
from taskdistill.engine.schedule import scaled_config


@pytest.mark.parametrize("rule, lr_factor", [("linear", 4.0), ("sqrt", 2.0), ("none", 1.0)])
def test_batch_scale_scales_every_stage_and_its_rate_by_the_rule(rule, lr_factor):
    cfg = load_config(RunConfig, None, ["execution.batch_scale=4", f"execution.lr_scaling={rule}"])
    got = scaled_config(cfg)
    for path in ("distill.train", "student.finetune", "student.scratch", "teacher.train", "feature_distill.train"):
        a, b = cfg, got
        for part in path.split("."):
            a, b = getattr(a, part), getattr(b, part)
        assert b.batch_size == 4 * a.batch_size and b.lr == pytest.approx(lr_factor * a.lr), path


def test_scale_one_is_the_config_itself():
    cfg = load_config(RunConfig, None, [])
    assert scaled_config(cfg) is cfg
