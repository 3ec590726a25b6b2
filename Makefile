# The two commands of the README:
#   make run   installs everything and runs the built-in default (Fashion-MNIST, 10 labels per class)
#   make test  installs everything and runs the tests (what .ci/run calls)
.PHONY: run test lint bench-default bench-distill bench-sweep bench-seg bench-retrieval bench-claim

run:
	scripts/setup.sh
	.venv/bin/taskdistill run --resume

test:
	scripts/setup.sh hub,test
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check src tests benchmarks

bench-default:
	.venv/bin/python benchmarks/default_seeds.py
	# the same with the ensemble teacher (BENCHMARKS.md "The default": not above noise, not taken)
	.venv/bin/python benchmarks/default_seeds.py --out benchmarks/results/default_ensemble --set $(LITE_ENSEMBLE)
	# fashion-mnist-full's clipped distillation for the default, on a validation split (not above noise, not taken)
	.venv/bin/python benchmarks/stage3.py --config default --vary distilled --seeds 0,1,2 --set num_threads=1 \
		--out benchmarks/results/default-clip-val --variant base= --variant clip1=distill.train.clip_grad_norm=1.0

# torchdistill is installed only here, in its own environment, for the comparison
.venv-bench/bin/python:
	python3 -m venv .venv-bench
	.venv-bench/bin/pip install -q -e . torchdistill==1.1.3

bench-distill: .venv-bench/bin/python
	.venv-bench/bin/python benchmarks/distill_throughput.py

bench-sweep:
	scripts/setup.sh
	.venv/bin/python benchmarks/lr_search.py
	.venv/bin/taskdistill sweep fashion-mnist-sweep --budgets 1,5,10,50 --seeds 0,1,2 \
		--methods teacher-linear,teacher-finetune,scratch,pretrained-finetune,task-agnostic,task-oriented,task-oriented-pretrained \
		--out benchmarks/results/sweep

bench-seg:
	scripts/setup.sh
	.venv/bin/python benchmarks/lr_search.py --config seg-composite --budget 10 --val 50 --out benchmarks/results/seg_lr_search
	.venv/bin/python benchmarks/segmentation_sweep.py --budgets 10,30,100 --seeds 0,1,2

# the pool sources come from Debian and npm (scripts/setup_pool_data.sh); pools and embeddings land in data/
bench-retrieval:
	scripts/setup.sh
	scripts/setup_pool_data.sh
	.venv/bin/python benchmarks/retrieval_index.py
	.venv/bin/python benchmarks/retrieval_transfer.py --seeds 0,1,2
	.venv/bin/python benchmarks/retrieval_transfer.py --seeds 0,1,2 --cap fashion-mnist=20000 \
		--pool data/pool-demo-fm20k --embeddings data/emb-demo-fm20k-lite2 --out benchmarks/results/retrieval_transfer_fm20k
	.venv/bin/python benchmarks/retrieval_transfer.py --seeds 0,1,2 --n 6000 --cap fashion-mnist=20000 \
		--pool data/pool-demo-fm20k --embeddings data/emb-demo-fm20k-lite2 --out benchmarks/results/retrieval_transfer_fm20k_n6000
	.venv/bin/python benchmarks/retrieval_transfer.py --seeds 0,1,2 --n 6000 --cap fashion-mnist=8000 \
		--pool data/pool-demo-fm8k --embeddings data/emb-demo-fm8k-lite2 --out benchmarks/results/retrieval_transfer_fm8k

# The paper's claim at full scale (issue 20, BENCHMARKS.md): stage-3 variants, baselines on 5 seeds, the
# method table over the whole unlabeled Fashion-MNIST split, and the same table on the built-in clipart dataset.
# Hours on 2 CPU cores; every command resumes where it stopped.
# pseudo-label's stage-3 rate, chosen on a validation split (every variant starts from a plain stage 3)
PSEUDO_LABEL_STAGE3 = --variant anchor-1-lr1e-4=distill.finetune_anchor=1.0,distill.pseudo_label_anchor_lr=1e-4 \
	--variant anchor-1-lr3e-4=distill.finetune_anchor=1.0,distill.pseudo_label_anchor_lr=3e-4 \
	--variant anchor-1-lr1e-3=distill.finetune_anchor=1.0,distill.pseudo_label_anchor_lr=1e-3 --variant plain= \
	--variant anchor-1-lr3e-5=distill.finetune_anchor=1.0,distill.pseudo_label_anchor_lr=3e-5
# the folders measured before fashion-mnist-full clipped its distillation's gradients (BENCHMARKS.md)
UNCLIPPED = --set distill.train.clip_grad_norm=null
# Lite2 (teacher.model) + the two other packaged EfficientNet-Lites
LITE_ENSEMBLE = 'teacher.ensemble=[{name: tf_efficientnet_lite0, pretrained: true, input_size: 64}, {name: tf_efficientnet_lite1, pretrained: true, input_size: 64}]'

bench-claim:
	scripts/setup.sh
	.venv/bin/python benchmarks/stage3.py --seeds 0,1,2 --set num_threads=1
	# (the folder was made before fashion-mnist-sweep took the anchored stage 3; these methods have no stage 3)
	.venv/bin/taskdistill sweep fashion-mnist-sweep --methods scratch,pretrained-finetune --budgets 10 \
		--seeds 0,1,2,3,4 --set num_threads=1 --set distill.finetune_anchor=0 --set student.finetune.lr=1e-4 \
		--out benchmarks/results/baselines-5seeds
	# the issue-3 grid with the anchored stage 3, every budget (its stage-3 rows: method_table.py --budget B)
	.venv/bin/taskdistill sweep fashion-mnist-sweep --methods teacher-finetune,task-oriented,task-oriented-pretrained \
		--budgets 1,5,10,50 --seeds 0,1,2 --set num_threads=1 --out benchmarks/results/sweep-anchored
	for b in 1 5 10 50; do .venv/bin/python benchmarks/method_table.py --config fashion-mnist-sweep --budget $$b \
		--out benchmarks/results/sweep-anchored --methods teacher-finetune,task-oriented,task-oriented-pretrained,pretrained-finetune,scratch \
		--summary-only --summary-name summary-b$$b --set num_threads=1 --baselines benchmarks/results/baselines-5seeds || exit 1; done
	.venv/bin/python benchmarks/stage3.py --config fashion-mnist-full --method pseudo-label --seeds 0,1,2 \
		--set num_threads=1 $(UNCLIPPED) --out benchmarks/results/stage3-pseudo-label $(PSEUDO_LABEL_STAGE3)
	# pseudo-label's distillation rate, on the same split (only the distilled columns compare)
	.venv/bin/python benchmarks/stage3.py --config fashion-mnist-full --method pseudo-label --vary distilled --seeds 0,1,2 \
		--set num_threads=1 $(UNCLIPPED) --out benchmarks/results/stage3-pseudo-label --summary-name summary-stage2-rate \
		--variant plain= --variant stage2-lr3e-3=distill.train.lr=3e-3 --variant stage2-clip1=distill.train.clip_grad_norm=1.0
	# task-oriented-pretrained's distillation rate on the whole transfer set, from the teachers just above
	.venv/bin/python benchmarks/stage3.py --config fashion-mnist-full --method task-oriented-pretrained --vary distilled \
		--teachers benchmarks/results/stage3-pseudo-label --seeds 0,1,2 --set num_threads=1 $(UNCLIPPED) \
		--out benchmarks/results/stage2-pretrained-rate --variant lr1e-2= --variant lr3e-3=distill.pretrained_student_lr=3e-3 \
		--variant clip1=distill.train.clip_grad_norm=1.0
	# task-oriented-pretrained clipped: more epochs, higher rates
	.venv/bin/python benchmarks/stage3.py --config fashion-mnist-full --method task-oriented-pretrained --vary distilled \
		--teachers benchmarks/results/stage3-pseudo-label --seeds 0,1,2 --set num_threads=1 $(UNCLIPPED) \
		--out benchmarks/results/stage2-pretrained-rate --summary-name summary-clipped-rate --variant lr1e-2= \
		--variant clip1=distill.train.clip_grad_norm=1.0 \
		--variant clip1-lr3e-2=distill.train.clip_grad_norm=1.0,distill.pretrained_student_lr=3e-2 \
		--variant clip1-lr1e-1=distill.train.clip_grad_norm=1.0,distill.pretrained_student_lr=1e-1
	.venv/bin/python benchmarks/stage3.py --config fashion-mnist-full --method task-oriented-pretrained --vary distilled \
		--teachers benchmarks/results/stage3-pseudo-label --seeds 0,1,2 --set num_threads=1 $(UNCLIPPED) \
		--out benchmarks/results/stage2-pretrained-rate --summary-name summary-epochs --variant lr1e-2= \
		--variant clip1=distill.train.clip_grad_norm=1.0 \
		--variant clip1-epochs6=distill.train.clip_grad_norm=1.0,distill.train.epochs=6
	# the same for task-oriented (soft KL)
	.venv/bin/python benchmarks/stage3.py --config fashion-mnist-full --method task-oriented --vary distilled \
		--teachers benchmarks/results/stage3-pseudo-label --seeds 0,1,2 --set num_threads=1 $(UNCLIPPED) \
		--out benchmarks/results/stage2-task-oriented-clip --variant base= --variant clip1=distill.train.clip_grad_norm=1.0
	# the two tables as first run, before fashion-mnist-full clipped its distillation
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full \
		--methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained --set num_threads=1 $(UNCLIPPED) \
		--baselines benchmarks/results/baselines-5seeds
	.venv/bin/taskdistill sweep fashion-mnist-full --methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained \
		--budgets 10 --seeds 3,4 --set num_threads=1 $(UNCLIPPED) --out benchmarks/results/full
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full \
		--summary-only --seeds 0,1,2,3,4 --summary-name summary-5seeds --set num_threads=1 $(UNCLIPPED) \
		--baselines benchmarks/results/baselines-5seeds
	# the same with the ensemble of the three packaged EfficientNet-Lites as the teacher (docs/ensemble.md)
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full-ensemble \
		--methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained --set num_threads=1 \
		--set $(LITE_ENSEMBLE) $(UNCLIPPED) --baselines benchmarks/results/baselines-5seeds
	.venv/bin/taskdistill sweep fashion-mnist-full --methods teacher-finetune,task-oriented-pretrained,task-oriented,pseudo-label \
		--budgets 10 --seeds 3,4 --set num_threads=1 --set $(LITE_ENSEMBLE) $(UNCLIPPED) --out benchmarks/results/full-ensemble
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full-ensemble \
		--summary-only --seeds 0,1,2,3,4 --summary-name summary-5seeds --set num_threads=1 --set $(LITE_ENSEMBLE) \
		$(UNCLIPPED) --baselines benchmarks/results/baselines-5seeds
	# pseudo-label's seed 4 with the ensemble teacher, with its loss curve: as in the sweep, at lr 3e-3, clipped at norm 1
	for run in pl-s4:distill.train.lr=1e-2 pl-s4-lr3e-3:distill.train.lr=3e-3 pl-s4-clip1:distill.train.clip_grad_norm=1.0; do \
		name=$${run%%:*}; test -f benchmarks/results/pseudo-label-ensemble-s4/$$name/metrics.json || \
		.venv/bin/taskdistill run fashion-mnist-full --set seed=4 --set num_threads=1 --set 'run.methods=[pseudo-label]' \
		--set $(LITE_ENSEMBLE) --set distill.cache_dir=benchmarks/results/full-ensemble/.cache \
		--set output_dir=benchmarks/results/pseudo-label-ensemble-s4 --set name=$$name $(UNCLIPPED) --set $${run#*:} \
		|| exit 1; done
	# the two tables with the shipped config, whose distillation is clipped at norm 1; the teachers and their cached
	# outputs are the unclipped tables' (cp -al benchmarks/results/full/{teachers,.cache} benchmarks/results/full-clip/)
	for table in full full-ensemble; do mkdir -p benchmarks/results/$$table-clip && for d in teachers .cache; do \
		test -e benchmarks/results/$$table-clip/$$d || ! test -e benchmarks/results/$$table/$$d || \
		cp -al benchmarks/results/$$table/$$d benchmarks/results/$$table-clip/$$d || exit 1; done; done
	# (task-oriented-pretrained at distill.pretrained_student_lr 3e-2; its cells at 1e-2, run first, are in
	# benchmarks/results/full-clip-top-lr1e-2/: --set distill.pretrained_student_lr=1e-2)
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full-clip \
		--methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained --set num_threads=1 \
		--baselines benchmarks/results/baselines-5seeds
	.venv/bin/taskdistill sweep fashion-mnist-full --methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained \
		--budgets 10 --seeds 3,4 --set num_threads=1 --out benchmarks/results/full-clip
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full-clip \
		--summary-only --seeds 0,1,2,3,4 --summary-name summary-5seeds --set num_threads=1 \
		--baselines benchmarks/results/baselines-5seeds
	.venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full-ensemble-clip \
		--methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained --set num_threads=1 \
		--set $(LITE_ENSEMBLE) --baselines benchmarks/results/baselines-5seeds
	scripts/setup_clipart_data.sh
	.venv/bin/python benchmarks/method_table.py --config clipart-sweep --out benchmarks/results/clipart_sweep \
		--methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained,pretrained-finetune,scratch \
		--set num_threads=1
