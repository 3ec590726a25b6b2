"""Export: ONNX (float and uint8 input, int8), the timm folder round trip without taskdistill, TorchScript;
every export checks itself and a mismatch writes nothing. Also `predict` on folders and `benchmark`."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from taskdistill.cli.main import main
from taskdistill.config import RunConfig, load_config
from taskdistill.engine.checkpoint import load_checkpoint
from taskdistill.pipelines.run import run as run_task_oriented
from tests.conftest import make_folder, tiny_overrides

pytest.importorskip("onnxruntime", reason="export extras: pip install 'taskdistill[export]'")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run: teacher at 24 px, student at 16 px, images decoded at 24 px."""
    root = tmp_path_factory.mktemp("export")
    train, test = make_folder(root / "train", 30, seed=0), make_folder(root / "test", 10, seed=1)
    cfg = load_config(RunConfig, None, tiny_overrides(train, test, root / "runs") + ["teacher.model.input_size=24"])
    run_task_oriented(cfg)
    return root / "runs" / "tiny"


def test_run_report_shows_what_the_student_buys(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage in ("teacher", "student"):
        lat = metrics["stages"][stage]["latency"]
        assert lat["p50_ms"] > 0 and lat["p95_ms"] >= lat["p50_ms"] and lat["throughput"] > 0
        assert metrics["stages"][stage]["gflops"] > 0
    report = (run_dir / "report.md").read_text()
    assert "batch-1 ms p50 / p95" in report and "fewer FLOPs than the teacher" in report


@pytest.mark.parametrize("extra", [[], ["--with-preprocessing"]])
def test_onnx_export_matches_pytorch_on_test_images(run_dir: Path, tmp_path: Path, capsys, extra) -> None:
    import onnxruntime as ort

    out = tmp_path / "onnx"
    assert main(["export", str(run_dir / "checkpoints" / "student"), "--format", "onnx", "--out", str(out),
                 *extra]) == 0
    assert "top-1 agreement 100.00 %" in capsys.readouterr().out
    record = json.loads((out / "export.json").read_text())
    assert record["parity"]["images"] == 30 and record["parity"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    if extra:  # uint8 [B, H, W, C] of any size, batch of 5
        assert inp.name == "images" and inp.type == "tensor(uint8)"
        x = np.random.default_rng(0).integers(0, 256, (5, 31, 40, 3), dtype=np.uint8)
    else:
        assert inp.name == "pixel_values"
        x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    assert session.run(None, {inp.name: x})[0].shape == (5, 3)


def test_int8_export_reports_accuracy_and_latency(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    assert main(["export", str(run_dir / "checkpoints" / "student"), "--out", str(out), "--quantize", "int8",
                 "--calibration-images", "16"]) == 0
    assert "int8: top-1" in capsys.readouterr().out
    q = json.loads((out / "export.json").read_text())["int8"]
    assert q["calibration_images"] == 16 and 0.0 <= q["int8_top1"] <= 1.0
    assert q["int8_onnx_latency"]["p50_ms"] > 0 and (out / "model.int8.onnx").stat().st_size > 0
    assert main(["export", str(run_dir / "checkpoints" / "teacher"), "--out", str(out)]) == 0
    assert not (out / "model.int8.onnx").exists()  # the other model's int8 file does not stay beside this one


def test_a_mismatching_export_fails_and_writes_nothing(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import taskdistill.export.onnx_file as onnx_file

    real = onnx_file.OnnxModel.run
    monkeypatch.setattr(onnx_file.OnnxModel, "run", lambda self, x: real(self, x) + 1e-3)
    out = tmp_path / "bad"
    assert main(["export", str(run_dir / "checkpoints" / "student"), "--out", str(out)]) == 2
    assert "does not match the PyTorch model" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".bad.partial*"))


def test_timm_folder_loads_without_taskdistill_and_agrees(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "hf"
    assert main(["export", str(run_dir / "checkpoints" / "student"), "--format", "hf", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "resnet10t" and cfg["label_names"] == ["bars", "circle", "cross"]
    assert cfg["pretrained_cfg"]["input_size"] == [3, 16, 16] and cfg["pretrained_cfg"]["crop_pct"] == 1.0
    assert "Labels (3)" in (out / "README.md").read_text()
    x = torch.randn(4, 3, 16, 16)
    np.save(tmp_path / "x.npy", x.numpy())
    script = (
        "import sys, numpy as np, torch, timm\n"
        f"m = timm.create_model('local-dir:{out}', pretrained=True).eval()\n"
        f"y = m(torch.from_numpy(np.load('{tmp_path / 'x.npy'}'))).detach().numpy()\n"
        "print(tuple(timm.data.resolve_data_config({}, model=m)['input_size']))\n"
        "print(any(k.startswith('taskdistill') for k in sys.modules))\n"
        f"np.save('{tmp_path / 'y.npy'}', y)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(3,", "16,", "16)", "False"]
    model, _ = load_checkpoint(run_dir / "checkpoints" / "student")
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - ref).max() <= 1e-4


def test_torchscript_export(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ts"
    assert main(["export", str(run_dir / "checkpoints" / "teacher"), "--format", "torchscript", "--out", str(out)]) == 0
    scripted = torch.jit.load(str(out / "model.pt"))
    assert scripted(torch.zeros(2, 3, 24, 24)).shape == (2, 3)
    assert main(["export", str(run_dir / "checkpoints" / "teacher"), "--format", "torchscript", "--out",
                 str(out), "--quantize", "int8"]) == 2


def test_predict_streams_a_folder_as_csv_and_lists_the_bad_file(run_dir: Path, tmp_path: Path, capsys) -> None:
    folder = make_folder(tmp_path / "imgs", 4, seed=3)
    (folder / "circle" / "broken.png").write_text("not a png")
    assert main(["predict", str(run_dir / "checkpoints" / "student"), str(folder), "--format", "csv",
                 "--top-k", "2", "--batch-size", "5"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == 12 and set(rows[0]) == {"path", "label", "probability", "label_2", "probability_2"}
    assert all(r["label"] in ("bars", "circle", "cross") and 0 <= float(r["probability"]) <= 1 for r in rows)
    assert "skipped 1 unreadable image(s)" in captured.err and "broken.png" in captured.err
    assert main(["predict", str(run_dir / "checkpoints" / "student"), str(folder / "*" / "00[01].png"),
                 "--format", "json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6 and all(x["image"].endswith(("000.png", "001.png")) for x in lines)
    assert main(["predict", str(run_dir / "checkpoints" / "student"), str(tmp_path / "nothing*.png")]) == 2


def test_benchmark_compares_the_student_with_its_teacher(run_dir: Path, capsys) -> None:
    assert main(["benchmark", str(run_dir / "checkpoints" / "student"), "--seconds", "0.2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in rows] == ["teacher", "student"]
    for r in rows:
        assert r["pytorch"]["p50_ms"] > 0 and r["onnxruntime"]["throughput"] > 0 and r["gflops"] > 0
