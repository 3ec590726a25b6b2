"""A short real run: packaged Fashion-MNIST, the packaged ImageNet EfficientNet-Lite0 as teacher."""

import json

from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.run import run as run_task_oriented


def test_real_slice_end_to_end(tmp_path):
    cfg = load_config(RunConfig, None, [
        f"output_dir={tmp_path}", "name=slice", "data.labels_per_class=5",
        "teacher.model.name=tf_efficientnet_lite0", "teacher.model.input_size=32", "teacher.mode=linear-probe",
        "student.model.input_size=28", "distill.transfer.max_images=1000", "distill.train.epochs=2",
        "student.finetune.min_steps=20", "student.scratch.min_steps=20",
    ])
    result = run_task_oriented(cfg)
    rows = {r["stage"]: r for r in result.rows}
    # A linear probe on ImageNet features with 50 labels is far above chance (10%) on real images...
    assert rows["teacher"]["test"]["top1"] > 0.45
    # ...and distilling it over 1000 unlabeled images teaches a random-init student most of that.
    assert rows["student_distilled"]["test"]["top1"] > 0.35
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert metrics["data"] == {"labeled": 50, "val": 0, "transfer": 1000, "test": 10000, "skipped_bad_images": 0}
    assert metrics["stages"]["teacher"]["test"]["num_images"] == 10000
