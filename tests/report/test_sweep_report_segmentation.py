"""The sweep report shows mIoU against labeled images for segmentation records."""

from taskdistill.report.sweep_report import summary_table, write_sweep_report


def seg_records() -> list[dict]:
    return [{"method": m, "budget": b, "seed": s, "miou": v + 0.01 * s, "pixel_accuracy": 0.9, "seconds": 10.0 + s,
             "per_class_iou": {"background": 0.9, "bag": None}}
            for m, base in (("scratch", 0.2), ("task-oriented", 0.3)) for b, v in ((10, base), (30, base + 0.1))
            for s in (0, 1)]


def test_segmentation_table_and_files(tmp_path):
    md = summary_table(seg_records(), "miou", "labeled images")
    assert "| method | 10 labeled images | 30 labeled images | mean wall time (s) |" in md
    assert "| task-oriented | **30.50 ± 0.71** | **40.50 ± 0.71** | 10.5 |" in md
    paths = write_sweep_report(seg_records(), tmp_path, "seg", metric="miou", budget_unit="labeled images")
    report = paths["report_md"].read_text()
    assert "`miou` in %" in report and "labels/class" not in report
    assert paths["accuracy_vs_labels"].read_bytes().startswith(b"\x89PNG")
