# Everyday entry points. `make demo` and `make test` are the two commands README.md gives.
PYTHON ?= python3
OUT ?= out

.PHONY: setup demo test bpf bpf-check lint bench bench-overhead bench-analyze

setup:
	bash scripts/setup.sh

# Capture the built-in demo workload for a few seconds, then analyze it offline (a re-run replaces
# the demo's own outputs: --force).
demo: setup
	mkdir -p $(OUT)
	$(PYTHON) fixtures/demo_workload.py --seconds 6 & \
	trace capture -q -d 5s --force -o $(OUT)/demo.tar.zst; \
	wait
	trace info $(OUT)/demo.tar.zst
	trace analyze $(OUT)/demo.tar.zst
	trace report $(OUT)/demo.tar.zst --force -o $(OUT)/report.html
	@echo "open $(OUT)/report.html in a browser: the whole capture on one page"

test: setup
	$(PYTHON) -m pytest -q -ra tests

bpf:
	$(MAKE) -C bpf

bpf-check:
	$(MAKE) -C bpf check

lint:
	ruff check .

bench:
	$(PYTHON) bench/bench_ingest.py

# Throughput nginx keeps under each recorder (root, quiet machine, ~5 minutes): docs/performance.md.
bench-overhead:
	$(PYTHON) bench/bench_overhead.py

bench-analyze:
	$(PYTHON) bench/bench_analyze.py
