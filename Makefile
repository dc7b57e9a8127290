# hemabook: the two commands a fresh clone needs are `make demo` and `make test`.
# Both create .venv when it is absent and install the tested versions (constraints.txt) first.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hemabook-installed
WORKERS ?= 2

.PHONY: install demo test test-slow clean-nbs sync-check test-nbs outputs docs browser lock clean

install: $(STAMP)

# Reinstall whenever the declared requirements or the lock change. The kernel 'hemabook' (JupyterLab, papermill,
# `hemabook run`) hides one warning, which fastai 2.8's import raises with the torch pinned here (its layers call the
# deprecated torch.jit.script) and which no user can act on; every other warning shows. Then umap-learn's numba
# functions are compiled into their disk cache (hemabook.crossdomain.warm_umap, ~45 s on one core): once per
# install, not in the first run that draws a UMAP.
$(STAMP): setup.py settings.ini constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip>=23"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name hemabook --display-name "Python (hemabook)" \
	  --env PYTHONWARNINGS 'ignore:`torch.jit.script` is deprecated:FutureWarning'
	$(BIN)/python -W ignore -c "from hemabook.crossdomain import warm_umap; warm_umap()"
	touch $(STAMP)

demo: install
	$(BIN)/hemabook demo

# Notebooks and library in sync, then every notebook (one pytest test each) and tests/, counted by pytest.
test: install browser sync-check
	$(BIN)/python -m pytest -n $(WORKERS) --maxschedchunk 1 --durations=12 tests/

# After editing notebooks: export the library, clean the notebooks, and give them the kernel metadata JupyterLab
# writes (tools/nb_kernel.py: nbdev_clean renames the kernel's display name, and JupyterLab would mark them changed).
CLEAN_NBS = PATH=$(BIN):$$PATH nbdev_export && PATH=$(BIN):$$PATH nbdev_clean && $(BIN)/python tools/nb_kernel.py
clean-nbs: install
	$(CLEAN_NBS)

# Re-exporting and re-cleaning must change nothing: nbs/ is the source of hemabook/.
sync-check: install
	@tmp=$$(mktemp -d); cp -r hemabook nbs $$tmp/; \
	$(CLEAN_NBS); \
	if ! diff -r -q -x __pycache__ -x .ipynb_checkpoints $$tmp/hemabook hemabook || \
	   ! diff -r -q -x __pycache__ -x .ipynb_checkpoints -x nbdev.yml $$tmp/nbs nbs; then \
	  echo "nbs/ and hemabook/ were out of sync (or notebooks not cleaned): run 'make clean-nbs', then commit."; \
	  rm -rf $$tmp; exit 1; fi; rm -rf $$tmp; echo "sync-check: notebooks and library in sync"

# Just the notebooks, through nbdev's own runner (prints only 'Success.').
test-nbs: install
	$(BIN)/nbdev_test --n_workers $(WORKERS) --timing

# The notebooks' cells flagged `#| slow` too (worked examples that train; `make test` skips them): about 5 CPU minutes.
test-slow: install
	HEMABOOK_TEST_FLAGS="slow" $(BIN)/python -m pytest -n $(WORKERS) --maxschedchunk 1 tests/test_notebooks.py

# Execute notebooks and store their outputs (figures, tables) for the docs: `make outputs NBS="nbs/10_synthetic.ipynb"`.
# Cells flagged `#| slow` (the worked examples that train for a minute; `make test` skips them) run here, so the pages
# keep their outputs; `FLAGS="slow gpu"` on a GPU machine runs the `#| gpu` cells too.
NBS ?= $(shell find nbs -name '*.ipynb' -not -path '*/.*' -not -name '_*' | sort)
FLAGS ?= slow
outputs: install
	$(BIN)/python tools/execute_nbs.py --flags "$(FLAGS)" $(NBS) && rm -rf nbs/experiments/runs && $(CLEAN_NBS)

# The docs site in _docs/ and README.md, from nbs/: `nbdev_docs` where quarto is on PATH, else nbdev's
# processing into _proc/ rendered by smalldocs (see tools/build_docs.py). `--readme` rebuilds only README.md.
docs: install
	$(BIN)/python tools/build_docs.py

# Debian's Chromium, for the headless-browser checks in tests/test_docs.py (they skip without it).
# Best effort: needs root and apt-get, and says why when it cannot install.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "browser: $$(chromium --version 2>/dev/null) is installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "browser: no apt-get here: install Chromium or Chrome by hand"; \
	elif [ "$$(id -u)" != 0 ]; then echo "browser: apt-get needs root: run 'sudo make browser' or 'sudo apt-get install chromium'"; \
	else t0=$$(date +%s); export DEBIAN_FRONTEND=noninteractive; \
	  if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; then \
	    echo "browser: installed $$(chromium --version 2>/dev/null) in $$(( $$(date +%s) - t0 )) s"; \
	  else echo "browser: apt-get could not install chromium (no route to the Debian mirror?); the browser tests will skip"; fi; fi

# Re-pin every installed package after a change to the requirements in settings.ini.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^hemabook' > constraints.tmp
	(sed -n '1,3p' constraints.txt; cat constraints.tmp) > constraints.new; mv constraints.new constraints.txt; rm constraints.tmp

clean:
	rm -rf _docs _proc runs .pytest_cache
