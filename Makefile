# The two commands of the README:
#   make run   installs everything and runs the built-in default (Fashion-MNIST, 10 labels per class)
#   make test  installs everything and runs the tests (what .ci/run calls)
.PHONY: run test lint bench-default

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
