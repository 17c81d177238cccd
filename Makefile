# mlrpl: `make reproduce` runs the main job, `make test` runs the tests (both create .venv when missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The tested torch pair; override for another platform, e.g. `make TORCH="torch==2.9.1 torchvision==0.24.1" test`.
TORCH ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist
RUNS := runs
J ?= 2
# FULL=1: the paper's schedule (grids/full/*.yaml) instead of the main job's laptop schedule (grids/*.yaml)
GRIDS := $(if $(filter 1,$(FULL)),grids/full,grids)
RESULTS := $(if $(filter 1,$(FULL)),$(RUNS)/full,$(RUNS))

.PHONY: reproduce paper paper-main_table paper-ablations paper-cooc paper-figures paper-claims test lab venv data fashion-mnist notebooks export clean readme check-clean sweep gpu-check

reproduce: data ## the main job: FashionScenes, every method × known_prop 0.1…0.9, ablations, co-occurrence; then tables/ and figures/
	@start=$$(date +%s); \
	$(BIN)/mlrpl sweep $(GRIDS)/main.yaml $(GRIDS)/ablations.yaml $(GRIDS)/cooc.yaml -j $(J) --results $(RESULTS) || exit 1; \
	$(MAKE) --no-print-directory paper; \
	echo; cat tables/main.md; echo; echo "main job: $$(( $$(date +%s) - start )) s of runs and rendering (make reproduce$(if $(FULL), FULL=$(FULL)))"

PM := $(BIN)/papermill --engine mlrpl --cwd nbs/paper -k python3 --no-progress-bar --log-level WARNING
paper: venv ## render tables/ and figures/ from the run files under $(RESULTS) (seconds; never trains), J notebooks at a time
	mkdir -p $(RESULTS)/paper
	$(MAKE) --no-print-directory -j $(J) paper-figures paper-main_table paper-ablations paper-cooc paper-claims
paper-main_table: venv
	$(PM) nbs/paper/main_table.ipynb $(RESULTS)/paper/main_table.ipynb -p results $(RESULTS)/main
paper-ablations: venv
	$(PM) nbs/paper/ablations.ipynb $(RESULTS)/paper/ablations.ipynb -p results $(RESULTS)/main:$(RESULTS)/ablations
paper-cooc: venv
	$(PM) nbs/paper/cooc.ipynb $(RESULTS)/paper/cooc.ipynb -p results $(RESULTS)/cooc
paper-figures: venv
	$(PM) nbs/paper/figures.ipynb $(RESULTS)/paper/figures.ipynb -p results $(RESULTS)/main
paper-claims: venv
	$(PM) nbs/paper/claims.ipynb $(RESULTS)/paper/claims.ipynb -p results $(RESULTS)/main:$(RESULTS)/ablations -p cooc_results $(RESULTS)/cooc
test: venv ## nbdev_test + pytest, closing on one line `N passed, N failed`
	$(BIN)/python tests/run.py

gpu-check: ## one prepared check of a GPU machine (AMP, channels_last, CPU = CUDA, torchrun/NCCL, resume, bench), <= 5 min with the venv; ARGS="--dry-run" on a CPU, ARGS="--reference DIR" for the official column
	bash bench/gpu_check.sh $(ARGS)

lab: venv ## JupyterLab from .venv on the project's kernel ('mlrpl (.venv)'), opening nbs/index.ipynb (the reading order); ARGS= passes options
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/nbs/index.ipynb $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

# The kernels (python3 for papermill and the sweep, mlrpl for JupyterLab: both this venv's Python) and the Jupyter
# server's pre-save hook: nbdev cleans a notebook of this project as it is saved, as `make clean` would.
JUPYTER_HOOK := $(VENV)/etc/jupyter/jupyter_server_config.json
# uv installs (torch in ~20 s rather than ~70 s with pip); bytecode is compiled at install, since imports may not write it
UV := $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode
venv: $(VENV)/.installed $(JUPYTER_HOOK)
$(VENV)/.installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv
	$(UV) $(TORCH)
	$(UV) -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/python -m ipykernel install --sys-prefix --name mlrpl --display-name "mlrpl (.venv)" >/dev/null
	touch $@
$(JUPYTER_HOOK): | $(VENV)/.installed
	$(BIN)/python -c "import json, pathlib; p = pathlib.Path('$@'); c = json.loads(p.read_text()) if p.exists() else {}; \
	c.setdefault('ContentsManager', {})['pre_save_hook'] = 'nbdev.clean.clean_jupyter'; \
	p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(c, indent=2) + '\\n')"

fashion-mnist: ## the real Fashion-MNIST files (Debian package), when missing and running as root
	@if [ -f "$(FASHION_MNIST)/train-images-idx3-ubyte.gz" ] || [ -f "$${MLRPL_DATA:-data}/fashion-mnist/train-images-idx3-ubyte.gz" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' or put its four .gz files in data/fashion-mnist/"; exit 1; fi

data: venv fashion-mnist ## FashionScenes under the data root: 500 / 1,000 scenes at outfit strength 0.8 (the main benchmark), and at 0, 0.5, 1
	$(BIN)/python -c "from mlrpl.core import data_root; from mlrpl.fashionscenes import write_fashion_scenes as w; r = data_root(); \
	[print('FashionScenes:', w(r/name, n_train=500, n_val=1000, cooc=c)) for name, c in (('fashionscenes', 0.8), \
	('fashionscenes-cooc0', 0.0), ('fashionscenes-cooc0.5', 0.5), ('fashionscenes-cooc1', 1.0))]"

notebooks: venv ## execute every library notebook, slow cells included, into runs/notebooks/
	mkdir -p $(RUNS)/notebooks
	cd nbs && for nb in [0-9]*.ipynb; do \
	  ../$(BIN)/papermill --engine mlrpl --cwd . -k python3 --no-progress-bar --log-level WARNING "$$nb" "../$(RUNS)/notebooks/$$nb" || exit 1; done

sweep: venv ## run a grid of experiment runs: `make sweep GRID=grids/smoke.yaml J=2 RESULTS=runs` (J runs at a time, into RESULTS)
	@test -n "$(GRID)" || { echo "usage: make sweep GRID=grids/<table>.yaml [J=2] [RESULTS=runs]"; exit 2; }
	$(BIN)/mlrpl sweep $(GRID) -j $(J) --results $(RESULTS)

WRITE_PARAMETERS := $(BIN)/python -c "from mlrpl.run import write_parameters; write_parameters()"
export: venv ## notebooks → mlrpl/, RunConfig → the run notebook's parameters cell, index → README.md
	$(BIN)/nbdev_export
	$(WRITE_PARAMETERS)
	$(BIN)/python .ci/readme.py

clean: venv ## strip notebook outputs and metadata (keeps papermill's tags)
	$(BIN)/nbdev_clean

check-clean: venv ## fail if notebooks are not clean or mlrpl/ / README.md are out of date
	$(BIN)/nbdev_clean && git diff --exit-code -- nbs
	$(BIN)/nbdev_export && $(WRITE_PARAMETERS) && $(BIN)/python .ci/readme.py && git diff --exit-code -- mlrpl README.md nbs/experiments
