"""The run report: scores with their 95% intervals, and the rows a test set is too small to separate."""

from taskdistill.report.markdown import run_report
from taskdistill.results import interval95

COLUMNS = (("top-1", "top1"), ("macro acc", "macro_accuracy"))


def row(stage, top1, n):
    test = {"top1": top1, "macro_accuracy": top1, "per_class_accuracy": {"a": top1, "b": None}, "num_images": n}
    return {"stage": stage, "what": stage, "model": "m", "params": 1e6, "test": test, "seconds": 1.0}


def test_wilson_interval_brackets_the_score_and_narrows_with_more_images():
    lo, hi = interval95(0.7, 100)
    assert lo < 0.7 < hi and 0.6 < lo and hi < 0.8
    assert interval95(0.7, 10_000)[1] - interval95(0.7, 10_000)[0] < (hi - lo) / 5
    assert interval95(1.0, 50)[1] == 1.0 and interval95(0.0, 50)[0] == 0.0


def test_report_shows_intervals_and_names_rows_it_cannot_separate():
    md = run_report("r", "classification", {"test": 200}, [row("x", 0.80, 200), row("y", 0.79, 200),
                                                           row("z", 0.50, 200)], [], COLUMNS, ["a", "b"],
                    ("top1", "macro_accuracy"))
    assert "top-1 % (95% CI)" in md and "80.00 (73.9-85.0)" in md
    assert "too small to separate" in md and "- x vs y: 1.00 points apart" in md
    assert "x vs z" not in md  # 30 points apart on 200 images: separated
    assert "| b | - | - | - |" in md  # a class absent everywhere


def test_per_pixel_scores_carry_no_interval():
    seg = [{**row("x", 0.5, 40), "test": {"miou": 0.5, "pixel_accuracy": 0.6, "per_class_iou": {"a": 0.5},
                                          "num_images": 40}}]
    md = run_report("s", "segmentation", {}, seg, [], (("mIoU", "miou"),), ["a"], ())
    assert "No interval is shown for mIoU" in md and "CI" not in md
