"""Typed run configuration. Every section is a dataclass; YAML and `--set` overrides fill it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from taskdistill.config.ranges import Rule, ge, gt, within

OnBadImage = Literal["fail", "skip"]
TeacherMode = Literal["linear-probe", "finetune", "lp-ft"]
Augment = Literal["none", "flip", "crop-flip"]


@dataclass
class DataConfig:
    """Where the labeled, unlabeled and test images come from and how the labels are budgeted."""

    dataset: str = "fashion-mnist"  # built-in name, "folder" or "csv"
    root: str | None = None  # built-in: data root (default: the packaged location; clipart: the folder it is built
    # into, default <cache>/datasets/clipart-v1); folder/csv: train path
    test_root: str | None = None  # folder/csv: test split path (required for those)
    # k labels per class (exactly k; error if a class has fewer)
    labels_per_class: int | None = field(default=10, metadata=ge(1, "labels per class"))
    # at most this many per class (all if the class is smaller)
    max_per_class: int | None = field(default=None, metadata=ge(1, "at most this many labels per class"))
    # a fraction of each class instead of a count
    label_fraction: float | None = field(
        default=None, metadata=within(0, 1, "the share of each class that is labeled", low_open=True))
    # carved out of the labeled images, per class
    val_per_class: int = field(default=0, metadata=ge(0, "validation images per class"))
    # Folder / CSV / manifest images are decoded once into an image store (docs/data.md) by this policy:
    # square side they are stored at; None: the largest model input size of the run
    load_size: int | None = field(default=None, metadata=ge(16, "the stored image side in pixels"))
    resize: Literal["crop", "squash"] = "crop"  # crop: timm's eval transform (short side to load_size / crop_pct,
    # centre crop; a square image gives the same pixels as squash at crop_pct 1); squash: stretch to a square
    # crop: share of the short side kept (timm's crop_pct; 1.0 keeps the whole short side)
    crop_pct: float = field(default=1.0, metadata=within(0, 1, "the share of the short side kept", low_open=True))
    interpolation: Literal["bicubic", "bilinear", "lanczos", "nearest", "box", "hamming"] = "bicubic"
    color: Literal["rgb", "gray"] = "rgb"  # gray stores one channel (a third of the disk), models still see RGB
    jpeg_draft: bool = True  # JPEGs much larger than load_size decode at 1/2-1/8 scale (libjpeg DCT scaling)
    store_dir: str | None = None  # where image stores live; None: $TASKDISTILL_CACHE_DIR/stores or ~/.cache/taskdistill/stores
    # processes that decode a new store; None: every usable core
    decode_workers: int | None = field(default=None, metadata=ge(1, "processes that decode a new image store"))
    on_bad_image: OnBadImage = "fail"
    on_empty_class: Literal["fail", "skip"] = "fail"  # folder: a class folder without images fails (listed) or is left out
    download: bool = False  # fashion-mnist: fetch the IDX files with torchvision when online
    split_seed: int | None = field(default=None, metadata=ge(0, "the seed of the labeled split"))  # None: the run seed


@dataclass
class ModelConfig:
    """A model by name: plain names are timm models; `open_clip:NAME/TAG` and `hf:REPO` pick other hubs."""

    name: str = "resnet10t"
    pretrained: bool = False  # packaged weights where they exist, else the hub (needs a network)
    checkpoint: str | None = None  # a local weights file (.safetensors or a taskdistill checkpoint)
    # None: the model's pretrained config
    input_size: int | None = field(default=None, metadata=ge(16, "the model's square input side in pixels"))
    drop_rate: float | None = field(default=None, metadata=within(0, 1, "a dropout rate", high_open=True))
    drop_path_rate: float | None = field(default=None, metadata=within(0, 1, "a stochastic-depth rate", high_open=True))


@dataclass
class OptimConfig:
    """One training stage's schedule."""

    epochs: int = field(default=30, metadata=ge(0, "passes over the training set"))
    batch_size: int = field(default=64, metadata=ge(1, "images per optimizer step"))
    lr: float = field(default=1e-3, metadata=gt(0, "the peak learning rate"))
    weight_decay: float = field(default=0.05, metadata=ge(0, "the optimizer's weight decay"))
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = field(default=0.0, metadata=ge(0, "epochs of linear learning-rate warmup"))
    label_smoothing: float = field(default=0.0, metadata=within(0, 1, "the label-smoothing mass", high_open=True))
    augment: Augment = "crop-flip"
    freeze_bn: bool = False  # keep batch-norm statistics fixed while training
    # small labeled sets: at least this many optimizer steps (epochs are repeated)
    min_steps: int = field(default=0, metadata=ge(0, "the fewest optimizer steps"))
    # the largest global gradient norm a step may apply (torch's clip_grad_norm_, timm's --clip-grad); None: no clipping
    clip_grad_norm: float | None = field(default=None, metadata=gt(0, "the largest gradient norm of a step"))


def _repeated_member(c: TeacherConfig) -> bool:
    seen = [dataclasses.astuple(m) for m in (c.model, *c.ensemble)]
    return len(set(seen)) < len(seen)


def _unknown_member(c: TeacherConfig) -> bool:
    """A plain (timm) member name timm does not know (hub names, `prefix:...`, are checked when built)."""
    if not c.ensemble:
        return False
    import timm

    return any(":" not in m.name and not timm.is_model(m.name) for m in c.ensemble)


@dataclass
class TeacherConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="tf_efficientnet_lite2", pretrained=True, input_size=64))
    mode: TeacherMode = "lp-ft"
    probe: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=10, lr=1e-2, weight_decay=0.0, augment="none", min_steps=100))
    train: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=30, lr=1e-4, batch_size=32, weight_decay=0.05, freeze_bn=True))
    # More teachers: the teacher is then an ensemble of `model` plus these (models/ensemble.py, docs/ensemble.md),
    # each trained as `mode` says, whose softened outputs are averaged. Empty: `model` alone.
    ensemble: list[ModelConfig] = field(default_factory=list)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(("ensemble",), lambda c: not _repeated_member(c),
             "a member repeats teacher.model or another member (the teacher is teacher.model plus every "
             "teacher.ensemble member): drop the repeat from teacher.ensemble, or change one of them"),
        Rule(("ensemble",), lambda c: not _unknown_member(c),
             "a member names a model timm does not know: fix its name (list models with `taskdistill models`, "
             "packaged weights with `taskdistill models --pretrained`)"),
    )


@dataclass
class TransferConfig:
    """The unlabeled images the teacher's predictions are distilled over."""

    source: str = "unlabeled"  # "unlabeled": the task's training images minus the labeled ones; or a manifest path;
    # or "wds:SPEC": webdataset tar shards streamed (folder, brace pattern or glob; local or fsspec URL), docs/distributed.md
    max_images: int | None = field(default=20000, metadata=ge(1, "the most transfer images used"))
    # cached teacher views per image (view 0: plain, view 1: mirrored, v >= 2: random crops)
    views: int = field(default=1, metadata=ge(1, "teacher views per transfer image"))
    # wds: images per epoch; None: all images in the shards (counted), capped at max_images
    epoch_images: int | None = field(default=None, metadata=ge(1, "streamed images per epoch"))
    # wds: DataLoader workers per process that read and decode shards
    workers: int = field(default=0, metadata=ge(0, "DataLoader workers per process"))
    # wds: samples shuffled within each reader's buffer
    shuffle_buffer: int = field(default=1000, metadata=ge(0, "samples in each reader's shuffle buffer"))


@dataclass
class DistillConfig:
    transfer: TransferConfig = field(default_factory=TransferConfig)
    temperature: float = field(default=2.0, metadata=gt(0, "the softmax temperature"))
    # Cached soft labels: "full" float16 logits, or "topk" probabilities at `temperature` (k classes per view,
    # the rest of the mass spread uniformly; worth it for many classes, e.g. a 1000-class proxy space).
    soft_labels: Literal["full", "topk"] = "full"
    topk: int = field(default=16, metadata=ge(1, "classes kept per view by topk soft labels"))
    # `task-oriented-pretrained`: the distillation learning rate for a student that starts from pretrained
    # weights (None: `train.lr`); a pretrained student wants a smaller one (benchmarks/lr_search.py).
    pretrained_student_lr: float | None = field(default=None, metadata=gt(0, "the learning rate of a pretrained student"))
    train: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=6, lr=2e-3, batch_size=128, augment="none"))
    # Stage 3 (the finetune on the labels after distillation) keeps distilling: every step adds this weight times
    # the distillation loss on `finetune_transfer_batch` transfer images (their cached teacher outputs) to the
    # labels' cross-entropy, so the labels refine the student without undoing what the transfer set taught it.
    # 0: a plain finetune on the labels (BENCHMARKS.md "Stage 3 that never hurts"). A stored config (sweep.yaml,
    # a checkpoint's) written before this key existed is read with 0 (`config.load.from_stored`).
    finetune_anchor: float = field(default=1.0, metadata=ge(0, "the weight of the distillation loss in stage 3"))
    finetune_transfer_batch: int = field(default=96, metadata=ge(1, "transfer images per stage-3 step"))
    # the rate of that stage 3 (student.finetune's other settings apply); None: student.finetune.lr. Methods whose
    # stage 3 is a plain finetune (task-agnostic, tdmr, finetune_anchor 0) keep student.finetune.lr
    finetune_anchor_lr: float | None = field(default=1e-3, metadata=gt(0, "the rate of the anchored stage 3"))
    # `pseudo-label`'s anchored stage 3 (its anchor: cross-entropy on the teacher's hard labels) at its own rate;
    # None: finetune_anchor_lr. Hard labels want a 10x smaller one (validation split, BENCHMARKS.md "Stage 3")
    pseudo_label_anchor_lr: float | None = field(default=1e-4, metadata=gt(0, "the rate of pseudo-label's stage 3"))
    cache_dir: str | None = None  # None: <output_dir>/.cache


@dataclass
class FeatureDistillConfig:
    """Task-agnostic baseline: match the frozen (not finetuned) teacher's pooled features through a projector."""

    loss: Literal["cosine", "contrastive", "cosine+contrastive"] = "cosine"
    contrastive_temperature: float = field(default=0.1, metadata=gt(0, "the contrastive softmax temperature"))
    # None: max(student, teacher) width; 0: a single linear map
    projector_hidden: int | None = field(default=None, metadata=ge(0, "the projector's hidden width"))
    train: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=8, lr=2e-3, batch_size=128, augment="none"))


@dataclass
class StudentConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="resnet10t", pretrained=False, input_size=32))
    # stage 3 (a plain finetune; when it keeps distilling its rate is distill.finetune_anchor_lr)
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

    # the teacher is built with this many classes: packaged weights keep their head
    source_classes: int = field(default=1000, metadata=ge(0, "classes of the teacher's own head"))
    # none: measured best on Fashion-MNIST at 64 px, 3 seeds (BENCHMARKS.md "TDMR"): padding -1.85, full -3.12 points
    prompt: Literal["padding", "full", "none"] = "none"
    # padding prompt: frame width in pixels; None: the teacher's input_size // 8
    pad: int | None = field(default=None, metadata=ge(1, "the prompt frame width in pixels"))
    # flm / ilm: fixed one-to-one maps; linear-logits: learned map on the source logits, started at FLM;
    # linear-features: learned map on the pooled features (a linear probe behind the prompt)
    label_mapping: Literal["flm", "ilm", "linear-logits", "linear-features"] = "linear-logits"
    # ilm: recompute the map every this many reprogramming steps
    ilm_period: int = field(default=25, metadata=ge(1, "reprogramming steps between ILM re-maps"))
    reprogram: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=50, lr=1e-2, batch_size=32, weight_decay=0.0, augment="crop-flip", min_steps=150))
    # w_t of the task term: "progressive" ramps 0 -> 1 over ramp_fraction of the steps; "one-shot": w = 1
    # (task outputs only); "joint": w = joint_weight throughout.
    schedule: Literal["progressive", "one-shot", "joint"] = "progressive"
    ramp_fraction: float = field(default=0.5, metadata=within(0, 1, "the share of steps the task weight ramps over"))
    ramp_shape: Literal["linear", "cosine"] = "linear"
    joint_weight: float = field(default=0.5, metadata=within(0, 1, "the task-term weight of the joint schedule"))
    proxy_temperature: float = field(default=2.0, metadata=gt(0, "the softmax temperature of the proxy outputs"))
    task_temperature: float = field(default=2.0, metadata=gt(0, "the softmax temperature of the task outputs"))
    proxy_soft_labels: Literal["full", "topk"] = "topk"  # the 1000-class source outputs; topk: k * 4 bytes/view
    proxy_topk: int = field(default=16, metadata=ge(1, "source classes kept per view by topk proxy labels"))
    distill: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=6, lr=2e-3, batch_size=128, augment="none"))
    evaluate_teacher: bool = True  # also report the reprogrammed teacher's test accuracy (not counted as cost)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(("source_classes", "label_mapping"), lambda c: c.source_classes >= 1 or c.label_mapping == "linear-features",
             "a one-to-one or logit label map needs the teacher's source classes: set source_classes >= 1 (e.g. "
             "1000), or label_mapping=linear-features"),
    )


@dataclass
class CompositeConfig:
    """The built-in segmentation task `fashion-composite` (data/composite.py): Fashion-MNIST items on textures."""

    # the training pool: labeled images are drawn from it, the rest is the transfer set
    train_images: int = field(default=6000, metadata=ge(1, "training canvases"))
    test_images: int = field(default=1000, metadata=ge(1, "test canvases"))
    canvas_size: int = field(default=64, metadata=ge(16, "the canvas side in pixels"))
    min_items: int = field(default=1, metadata=ge(1, "the fewest items per canvas"))
    max_items: int = field(default=3, metadata=ge(1, "the most items per canvas"))
    min_scale: float = field(default=0.4, metadata=within(0.1, 1, "the smallest item side as a share of the canvas"))
    max_scale: float = field(default=0.65, metadata=within(0.1, 1, "the largest item side as a share of the canvas"))
    classes: Literal["garments", "groups"] = "groups"  # background + 5 garment groups, or + the 10 garments
    # fixes every canvas of both splits (the run seed only picks the labeled images)
    seed: int = field(default=0, metadata=ge(0, "the seed of the canvases"))

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(("min_items", "max_items"), lambda c: c.min_items <= c.max_items,
             "min_items must be <= max_items; raise max_items or lower min_items"),
        Rule(("min_scale", "max_scale"), lambda c: c.min_scale <= c.max_scale,
             "min_scale must be <= max_scale; raise max_scale or lower min_scale"),
    )


@dataclass
class SegmentationConfig:
    """What `task: segmentation` adds (docs/segmentation.md). Models are `<backbone>` names wrapped with an
    FPN head; data.dataset is `fashion-composite` or `seg-folder` (data.root / data.test_root)."""

    # the few-shot budget, in images (a sweep's budgets set it)
    labeled_images: int = field(default=16, metadata=ge(1, "labeled images"))
    val_images: int = field(default=0, metadata=ge(0, "validation images"))  # carved out of the labeled images
    ignore_index: int = field(default=255, metadata=within(1, 255, "the mask value of unlabeled pixels"))
    head_width: int = field(default=64, metadata=ge(1, "FPN head channels"))  # FPN head channels, teacher and student
    # teacher logits cached at this side; None: the teacher head's own grid
    cache_grid: int | None = field(default=None, metadata=ge(1, "the side of the cached logit grid"))
    # task-agnostic: which teacher backbone level is matched (-2: stride 16 on conv nets)
    feature_level: int = field(default=-2, metadata=within(-5, 4, "a backbone level index; -1 is the deepest"))
    composite: CompositeConfig = field(default_factory=CompositeConfig)


@dataclass
class RunMethodsConfig:
    """What `taskdistill run` trains: the methods of `taskdistill sweep` (the same recipes, seeds and cache
    keys), as one cell of budget `data.labels_per_class` (segmentation: `segmentation.labeled_images`)."""

    methods: list[str] = field(default_factory=lambda: ["task-oriented", "scratch"])


@dataclass
class ExecutionConfig:
    """How stages run on the device (docs/gpu.md); none of it changes a CPU fp32 run's numbers."""

    # auto: bf16 on a CUDA GPU that supports it, else fp32 (the CPU: fp32). Applies to every stage, the
    # teacher-output cache, evaluation and embedding.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False  # torch.compile the trained modules of every stage and the teacher at inference
    channels_last: bool | None = None  # None: on CUDA only (CPU models keep their own oneDNN-safe layout)
    # minutes between mid-stage checkpoints (model, optimizer, sampler position, RNG); 0: none
    checkpoint_minutes: float = field(default=10.0, metadata=ge(0, "minutes between mid-stage checkpoints"))
    # inference (teacher-output cache, evaluation, embedding) on CUDA: the largest batch that fits, found once
    # per model and input size and remembered (eval_batch_size is where the search starts); ignored on the CPU
    auto_batch: bool = False
    # every stage's batch size times this; its learning rate follows `lr_scaling` (linear: lr * scale, sqrt:
    # lr * sqrt(scale), none: unchanged). 1: the configured batches and rates.
    batch_scale: float = field(default=1.0, metadata=gt(0, "the factor on every stage's batch size"))
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    # batches built ahead in a background thread (0: built between steps, on the main thread)
    prefetch: int = field(default=2, metadata=ge(0, "batches built ahead"))


@dataclass
class LogConfig:
    """What a stage records while it trains: a scalar CSV per stage always, TensorBoard when asked."""

    tensorboard: bool = False  # event files beside each stage's scalars.csv (needs the `tensorboard` extra)
    # the loss and metrics are read off the device (a sync) only every this many steps
    every_steps: int = field(default=50, metadata=ge(1, "steps between scalar reads"))
    # when the output is not a terminal: a progress line (images/s, ETA) every this many seconds
    progress_seconds: float = field(default=30.0, metadata=gt(0, "seconds between progress lines"))


@dataclass
class RunConfig:
    """Everything one `taskdistill run` needs; written into the run folder and every checkpoint."""

    name: str = "default"
    output_dir: str = "runs"
    seed: int = field(default=0, metadata=ge(0, "the run seed"))
    device: str = "auto"
    num_threads: int | None = field(default=None, metadata=ge(1, "CPU threads"))
    # also the teacher-cache batch: 128 built it faster than 256 here (BENCHMARKS.md)
    eval_batch_size: int = field(default=128, metadata=ge(1, "images per evaluation batch"))
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    feature_distill: FeatureDistillConfig = field(default_factory=FeatureDistillConfig)
    tdmr: TDMRConfig = field(default_factory=TDMRConfig)
    run: RunMethodsConfig = field(default_factory=RunMethodsConfig)
    task: Literal["classification", "segmentation"] = "classification"
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    log: LogConfig = field(default_factory=LogConfig)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(("tdmr.pad", "teacher.model.input_size"),
             lambda c: (c.tdmr.prompt != "padding" or c.tdmr.pad is None or c.teacher.model.input_size is None
                        or 2 * c.tdmr.pad < c.teacher.model.input_size),
             "the padding prompt's frame leaves no room for the image: set tdmr.pad below half the teacher's "
             "input size, or tdmr.pad=null for an eighth of it"),
        Rule(("run.methods",), lambda c: "tdmr" not in c.run.methods or not c.teacher.ensemble,
             "tdmr reprograms one frozen teacher and does not take teacher.ensemble: drop tdmr from run.methods, "
             "or set teacher.ensemble=[]"),
    )
