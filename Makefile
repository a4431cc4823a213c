# The two commands of the quick start are `make demo` and `make test`; both install what they need.
SANDBOX_DIR ?= .sandbox
ROWS ?= 100000
export TBS_CONFIG := $(abspath $(SANDBOX_DIR))/tbs.toml

.PHONY: setup demo test test-rollback test-unit lint format bench down clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	uv run tbs-emergency sandbox up --dir $(SANDBOX_DIR) --rows $(ROWS)
	uv run tbs-emergency config check
	uv run tbs-emergency drill rollback --scenario throughput
	uv run tbs-emergency status

test: setup
	uv run ruff check .
	uv run pytest -n 3 --dist loadgroup

# the automation-driven rollback drills alone (their own world with a Prefect server)
test-rollback: setup
	uv run pytest tests/e2e/rollback

test-unit: setup
	uv run pytest -m unit

lint: setup
	uv run ruff check .
	uv run ruff format --check .

format:
	uv run ruff format .
	uv run ruff check --fix .

# Benchmarks print ratios against their named baselines; they start their own servers, except
# rto.py which drills against the running sandbox (make demo first).
bench: setup
	uv run python bench/heavydb_sandbox.py
	uv run python bench/trigger_latency.py
	uv run --with 'reladiff[mysql]' python bench/integrity.py
	uv run python bench/backup.py
	uv run python bench/pitr.py
	uv run python bench/rto.py --runs 5

down:
	uv run tbs-emergency sandbox down --dir $(SANDBOX_DIR)

clean: setup
	uv run tbs-emergency sandbox down --dir $(SANDBOX_DIR) --purge
	rm -rf $(SANDBOX_DIR)
