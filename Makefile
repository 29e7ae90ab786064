# The two commands (see README.md). Each installs what it needs.
.PHONY: demo test unit stack-up stack-down k8s-up k8s-down bench

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

k8s-up:          ## build (once) and start the local Kubernetes test cluster
	scripts/env.sh dev && .venv/bin/python scripts/k8s.py up

k8s-down:        ## stop what k8s-up started
	.venv/bin/python scripts/k8s.py down

bench:           ## benchmarks (figures go in README.md and docs/)
	scripts/env.sh dev airflow dagster && .venv/bin/python scripts/stack.py up && .venv/bin/python scripts/k8s.py up --spark
	.venv/bin/python benchmarks/bench_check.py --pairs 21 --processes 200 --json benchmarks/results/check.json
	.venv/bin/python benchmarks/bench_build.py --runs 9 --json benchmarks/results/build.json
	.venv/bin/python benchmarks/bench_airflow.py --runs 40 --run-rounds 21 --json benchmarks/results/airflow.json
	.venv/bin/python benchmarks/bench_dagster.py
	.venv/bin/python benchmarks/bench_k8s.py
	.venv/bin/python benchmarks/bench_supply_chain.py --pairs 15 --runs 9 --json benchmarks/results/supply_chain.json
	.venv/bin/python benchmarks/bench_spark.py --runs 5 --json benchmarks/results/spark.json
