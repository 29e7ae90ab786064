# The two commands (see README.md). Each installs what it needs.
.PHONY: demo test unit stack-up stack-down bench

demo:            ## build -> push -> resolve -> check -> run the example job on local Docker
	scripts/demo.sh

test:            ## the whole suite against the real local stack (what CI runs)
	scripts/test.sh

unit:            ## unit tests only: no Docker, no registry
	scripts/env.sh dev && .venv/bin/python -m pytest tests/unit

stack-up:        ## start (or reuse) Docker, the registries and base images
	scripts/env.sh dev && .venv/bin/python scripts/stack.py up

stack-down:      ## stop what stack-up started
	.venv/bin/python scripts/stack.py down

bench:           ## benchmarks (figures go in README.md)
	scripts/env.sh dev && .venv/bin/python scripts/stack.py up && .venv/bin/python benchmarks/bench_check.py && .venv/bin/python benchmarks/bench_build.py
