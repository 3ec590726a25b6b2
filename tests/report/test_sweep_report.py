import csv
import json
import sys
from pathlib import Path

import pytest

from taskdistill.report.sweep_report import (
    load_results,
    plot_accuracy_vs_compute,
    plot_accuracy_vs_labels,
    summary_table,
    write_results,
    write_sweep_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BUDGETS = (1, 10, 100)
# method -> (mean top1 per budget, per-seed offset d, base seconds); seeds give mean-d, mean, mean+d,
# so the sample std (ddof=1) is exactly d.
METHODS = {
    "task-oriented": ((0.40, 0.70, 0.85), 0.01, 300.0),
    "generic-kd": ((0.45, 0.65, 0.80), 0.02, 200.0),
    "finetune-only": ((0.30, 0.60, 0.88), 0.03, 50.0),
}


def make_records() -> list[dict]:
    records = []
    for method, (means, d, base) in METHODS.items():
        for budget, mean in zip(BUDGETS, means, strict=True):
            for seed, off in enumerate((-d, 0.0, d)):
                records.append({
                    "method": method, "budget": budget, "seed": seed, "top1": mean + off,
                    "macro_accuracy": mean + off - 0.005, "teacher_images": 40000, "student_images": 160000,
                    "seconds": base + budget + seed, "teacher_params": 4823882, "student_params": 4927618,
                    "teacher_gflops": 0.11, "student_gflops": 0.02, "future_key": "ignored",
                    "stage_seconds": {"teacher": 50.1, "distill": 200.3 + seed, "finetune": 10.0},
                })
    return records


def assert_png(path: Path, size: tuple[int, int] = (960, 600)) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000
    height, width = imread(path).shape[:2]
    assert (width, height) == size


def test_report_from_stored_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    write_results(make_records(), tmp_path / "sweep")
    records = load_results(tmp_path / "sweep")
    assert records == load_results(tmp_path / "sweep" / "results.json") == json.loads(json.dumps(make_records()))

    paths = write_sweep_report(records, tmp_path / "report", title="Label-budget sweep")
    assert set(paths) == {"results_json", "results_csv", "accuracy_vs_labels", "accuracy_vs_compute",
                          "report_md", "report_html"}
    assert all(p.is_file() for p in paths.values())

    md = paths["report_md"].read_text()
    assert md.startswith("# Label-budget sweep")
    # hand-computed: mean of (m-d, m, m+d) is m, sample std is d; wall time = base + mean(1,10,100) + mean(0,1,2)
    assert "| method | 1 labels/class | 10 labels/class | 100 labels/class | mean wall time (s) |" in md
    assert "| task-oriented | 40.00 ± 1.00 | **70.00 ± 1.00** | 85.00 ± 1.00 | 338.0 |" in md
    assert "| generic-kd | **45.00 ± 2.00** | 65.00 ± 2.00 | 80.00 ± 2.00 | 238.0 |" in md
    assert "| finetune-only | 30.00 ± 3.00 | 60.00 ± 3.00 | **88.00 ± 3.00** | 88.0 |" in md
    assert md.count("**") == 6 and "(n=" not in md
    assert "![accuracy_vs_labels](accuracy_vs_labels.png)" in md

    with paths["results_csv"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 27
    assert {"stage_seconds.teacher", "stage_seconds.distill", "stage_seconds.finetune", "top1",
            "future_key"} <= set(rows[0])
    assert "stage_seconds" not in rows[0]
    assert float(rows[1]["stage_seconds.distill"]) == pytest.approx(201.3)

    assert_png(paths["accuracy_vs_labels"])
    assert_png(paths["accuracy_vs_compute"], (1440, 480))  # one panel per budget (3) and the legend

    page = paths["report_html"].read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "<title>Label-budget sweep</title>" in page and "<style>" in page
    assert ("<tr><td>task-oriented</td><td>40.00 ± 1.00</td><td><strong>70.00 ± 1.00</strong></td>"
            "<td>85.00 ± 1.00</td><td>338.0</td></tr>") in page
    assert "<td><strong>45.00 ± 2.00</strong></td>" in page and "<td><strong>88.00 ± 3.00</strong></td>" in page
    assert "src=\"accuracy" not in page  # no relative links: the page works when moved
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded


def test_table_other_metric_uneven_seeds_and_missing_cells() -> None:
    records = [r for r in make_records() if not (r["method"] == "generic-kd" and r["seed"] == 2)]
    records = [r for r in records if not (r["method"] == "finetune-only" and r["budget"] == 100)]
    records.append({"method": "one-shot", "budget": 10, "seed": 0, "top1": 0.5, "macro_accuracy": 0.5})
    table = summary_table(records, metric="macro_accuracy")
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| task-oriented", "| generic-kd", "| finetune-only",
                                                           "| one-shot"]
    # generic-kd at 1 label: (0.43, 0.45) - 0.005 -> mean 43.50, sample std 1.41 over 2 seeds
    assert "**43.50 ± 1.41 (n=2)**" in table
    assert "| finetune-only | 29.50 ± 3.00 (n=3) | 59.50 ± 3.00 (n=3) | – | 56.5 |" in table  # 50 + mean(1, 10) + mean(0, 1, 2)
    assert "| one-shot | – | 50.00 (n=1) | – | – |" in table
    assert "**84.50 ± 1.00 (n=3)**" in table


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sweep records"):
        summary_table([])
    with pytest.raises(ValueError, match="no sweep records"):
        write_sweep_report([], tmp_path / "r", title="empty")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match=r"has no 'top5'.*'top1'"):
        summary_table(make_records(), metric="top5")
    with pytest.raises(ValueError, match="has no 'budget'"):
        summary_table([{"method": "a", "top1": 0.5}])
    (tmp_path / "results.json").write_text('{"method": "a"}')
    with pytest.raises(ValueError, match="JSON list"):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nowhere")


def test_compute_plot_needs_seconds(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    records = [{k: v for k, v in r.items() if k != "seconds"} for r in make_records()]
    with pytest.raises(ValueError, match="seconds"):
        plot_accuracy_vs_compute(records, tmp_path / "c.png")
    paths = write_sweep_report(records, tmp_path, title="no timing")
    assert "accuracy_vs_compute" not in paths and paths["report_html"].read_text().count("base64,") == 1
    plot_accuracy_vs_labels(records[:1], tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:8] == PNG_SIGNATURE


def test_how_sure_names_gaps_below_the_seed_and_test_set_noise():
    from taskdistill.report.sweep_report import how_sure

    def recs(method, values, n=1000):
        return [{"method": method, "budget": 10, "seed": s, "top1": v, "num_images": n} for s, v in enumerate(values)]

    clear = how_sure(recs("a", [0.80, 0.81, 0.80]) + recs("b", [0.70, 0.71, 0.70]), "top1")
    assert "a leads b by 10.00 points" in clear[-1] and clear[-1].endswith(": separated")
    close = how_sure(recs("a", [0.71, 0.70, 0.72]) + recs("b", [0.70, 0.71, 0.70]), "top1")
    assert close[-1].endswith("NOT separated") and "test set of 1,000 images" in close[-1]
    # per-pixel scores: the seed spread only
    seg = how_sure([{**r, "miou": r.pop("top1")} for r in recs("a", [0.5, 0.52, 0.51]) + recs("b", [0.3, 0.31, 0.3])],
                   "miou")
    assert "test set" not in seg[-1] and seg[-1].endswith(": separated")
