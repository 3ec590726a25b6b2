"""Typed run configuration. Every section is a dataclass; YAML and `--set` overrides fill it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

OnBadImage = Literal["fail", "skip"]
TeacherMode = Literal["linear-probe", "finetune", "lp-ft"]
Augment = Literal["none", "flip", "crop-flip"]


@dataclass
class DataConfig:
    """Where the labeled, unlabeled and test images come from and how the labels are budgeted."""

    dataset: str = "fashion-mnist"  # built-in name, "folder" or "csv"
    root: str | None = None  # built-in: data root (default: the packaged location); folder/csv: train path
    test_root: str | None = None  # folder/csv: test split path (required for those)
    labels_per_class: int | None = 10  # k labels per class (exactly k; error if a class has fewer)
    max_per_class: int | None = None  # at most this many per class (all if the class is smaller)
    label_fraction: float | None = None  # a fraction of each class instead of a count
    val_per_class: int = 0  # carved out of the labeled images, per class
    # Folder / CSV / manifest images are decoded once into an image store (docs/data.md) by this policy:
    load_size: int | None = None  # square side they are stored at; None: the largest model input size of the run
    resize: Literal["crop", "squash"] = "crop"  # crop: timm's eval transform (short side to load_size / crop_pct,
    # centre crop; a square image gives the same pixels as squash at crop_pct 1); squash: stretch to a square
    crop_pct: float = 1.0  # crop: share of the short side kept (timm's crop_pct; 1.0 keeps the whole short side)
    interpolation: Literal["bicubic", "bilinear", "lanczos", "nearest", "box", "hamming"] = "bicubic"
    color: Literal["rgb", "gray"] = "rgb"  # gray stores one channel (a third of the disk), models still see RGB
    jpeg_draft: bool = True  # JPEGs much larger than load_size decode at 1/2-1/8 scale (libjpeg DCT scaling)
    store_dir: str | None = None  # where image stores live; None: $TASKDISTILL_CACHE_DIR/stores or ~/.cache/taskdistill/stores
    decode_workers: int | None = None  # processes that decode a new store; None: every usable core
    on_bad_image: OnBadImage = "fail"
    download: bool = False  # fashion-mnist: fetch the IDX files with torchvision when online
    split_seed: int | None = None  # seed of the labeled split; None: the run seed


@dataclass
class ModelConfig:
    """A model by name: plain names are timm models; `open_clip:NAME/TAG` and `hf:REPO` pick other hubs."""

    name: str = "resnet10t"
    pretrained: bool = False  # packaged weights where they exist, else the hub (needs a network)
    checkpoint: str | None = None  # a local weights file (.safetensors or a taskdistill checkpoint)
    input_size: int | None = None  # square side in pixels; None: the model's pretrained config
    drop_rate: float | None = None
    drop_path_rate: float | None = None


@dataclass
class OptimConfig:
    """One training stage's schedule."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: Augment = "crop-flip"
    freeze_bn: bool = False  # keep batch-norm statistics fixed while training
    min_steps: int = 0  # small labeled sets: at least this many optimizer steps (epochs are repeated)


@dataclass
class TeacherConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="tf_efficientnet_lite2", pretrained=True, input_size=64))
    mode: TeacherMode = "lp-ft"
    probe: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=10, lr=1e-2, weight_decay=0.0, augment="none", min_steps=100))
    train: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=30, lr=1e-4, batch_size=32, weight_decay=0.05, freeze_bn=True))


@dataclass
class TransferConfig:
    """The unlabeled images the teacher's predictions are distilled over."""

    source: str = "unlabeled"  # "unlabeled": the task's training images minus the labeled ones; or a manifest path;
    # or "wds:SPEC": webdataset tar shards streamed (folder, brace pattern or glob; local or fsspec URL), docs/distributed.md
    max_images: int | None = 20000
    views: int = 1  # cached teacher views per image (view 0: plain, view 1: mirrored, v >= 2: random crops)
    epoch_images: int | None = None  # wds: images per epoch; None: all images in the shards (counted), capped at max_images
    workers: int = 0  # wds: DataLoader workers per process that read and decode shards
    shuffle_buffer: int = 1000  # wds: samples shuffled within each reader's buffer


@dataclass
class DistillConfig:
    transfer: TransferConfig = field(default_factory=TransferConfig)
    temperature: float = 2.0
    # Cached soft labels: "full" float16 logits, or "topk" probabilities at `temperature` (k classes per view,
    # the rest of the mass spread uniformly; worth it for many classes, e.g. a 1000-class proxy space).
    soft_labels: Literal["full", "topk"] = "full"
    topk: int = 16
    # `task-oriented-pretrained`: the distillation learning rate for a student that starts from pretrained
    # weights (None: `train.lr`); a pretrained student wants a smaller one (benchmarks/lr_search.py).
    pretrained_student_lr: float | None = None
    train: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=6, lr=2e-3, batch_size=128, augment="none"))
    cache_dir: str | None = None  # None: <output_dir>/.cache


@dataclass
class FeatureDistillConfig:
    """Task-agnostic baseline: match the frozen (not finetuned) teacher's pooled features through a projector."""

    loss: Literal["cosine", "contrastive", "cosine+contrastive"] = "cosine"
    contrastive_temperature: float = 0.1
    projector_hidden: int | None = None  # None: max(student, teacher) width; 0: a single linear map
    train: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=8, lr=2e-3, batch_size=128, augment="none"))


@dataclass
class StudentConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="resnet10t", pretrained=False, input_size=32))
    finetune: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=30, lr=1e-4, batch_size=32, min_steps=100, freeze_bn=True))
    scratch: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=100, lr=2e-3, batch_size=32, min_steps=300))
    # The `pretrained-finetune` baseline: the pretrained student trained on the labels only (no distillation).
    pretrained_finetune: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=100, lr=3e-4, batch_size=32, min_steps=300))


@dataclass
class TDMRConfig:
    """TDMR (the `tdmr` method, docs/tdmr.md): reprogram the frozen pretrained teacher (prompt + label map),
    distil progressively from its proxy space (source classes -> task classes), then finetune the student."""

    source_classes: int = 1000  # the teacher is built with this many classes: packaged weights keep their head
    prompt: Literal["padding", "full", "none"] = "padding"
    pad: int | None = None  # padding prompt: frame width in pixels; None: the teacher's input_size // 8
    # flm / ilm: fixed one-to-one maps; linear-logits: learned map on the source logits, started at FLM;
    # linear-features: learned map on the pooled features (a linear probe behind the prompt)
    label_mapping: Literal["flm", "ilm", "linear-logits", "linear-features"] = "linear-logits"
    ilm_period: int = 25  # ilm: recompute the map every this many reprogramming steps
    reprogram: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=50, lr=1e-2, batch_size=32, weight_decay=0.0, augment="crop-flip", min_steps=150))
    # w_t of the task term: "progressive" ramps 0 -> 1 over ramp_fraction of the steps; "one-shot": w = 1
    # (task outputs only); "joint": w = joint_weight throughout.
    schedule: Literal["progressive", "one-shot", "joint"] = "progressive"
    ramp_fraction: float = 0.5
    ramp_shape: Literal["linear", "cosine"] = "linear"
    joint_weight: float = 0.5
    proxy_temperature: float = 2.0
    task_temperature: float = 2.0
    proxy_soft_labels: Literal["full", "topk"] = "topk"  # the 1000-class source outputs; topk: k * 4 bytes/view
    proxy_topk: int = 16
    distill: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=6, lr=2e-3, batch_size=128, augment="none"))
    evaluate_teacher: bool = True  # also report the reprogrammed teacher's test accuracy (not counted as cost)


@dataclass
class CompositeConfig:
    """The built-in segmentation task `fashion-composite` (data/composite.py): Fashion-MNIST items on textures."""

    train_images: int = 6000  # the training pool: labeled images are drawn from it, the rest is the transfer set
    test_images: int = 1000
    canvas_size: int = 64
    min_items: int = 1
    max_items: int = 3
    min_scale: float = 0.4  # item side as a share of the canvas side
    max_scale: float = 0.65
    classes: Literal["garments", "groups"] = "groups"  # background + 5 garment groups, or + the 10 garments
    seed: int = 0  # fixes every canvas of both splits (the run seed only picks the labeled images)


@dataclass
class SegmentationConfig:
    """What `task: segmentation` adds (docs/segmentation.md). Models are `<backbone>` names wrapped with an
    FPN head; data.dataset is `fashion-composite` or `seg-folder` (data.root / data.test_root)."""

    labeled_images: int = 16  # the few-shot budget, in images (a sweep's budgets set it)
    val_images: int = 0  # carved out of the labeled images
    ignore_index: int = 255
    head_width: int = 64  # FPN head channels, teacher and student
    cache_grid: int | None = None  # teacher logits cached at this side; None: the teacher head's own grid
    feature_level: int = -2  # task-agnostic: which teacher backbone level is matched (-2: stride 16 on conv nets)
    composite: CompositeConfig = field(default_factory=CompositeConfig)


@dataclass
class RunConfig:
    """Everything one `taskdistill run` needs; written into the run folder and every checkpoint."""

    name: str = "default"
    output_dir: str = "runs"
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    eval_batch_size: int = 128  # also the teacher-cache batch: 128 built it faster than 256 here (BENCHMARKS.md)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    feature_distill: FeatureDistillConfig = field(default_factory=FeatureDistillConfig)
    tdmr: TDMRConfig = field(default_factory=TDMRConfig)
    baselines: list[str] = field(default_factory=lambda: ["scratch"])
    task: Literal["classification", "segmentation"] = "classification"
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
