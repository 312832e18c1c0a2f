# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs, runs the small CPU bench end to end
#   make test   creates .venv, installs, runs the test suite (offline)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/defectfill demo --out runs/demo

test: install
	HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 MPLBACKEND=Agg $(PY) -m pytest -q -p no:cacheprovider tests

bench: install
	$(PY) -m pytest -q -m benchmark tests

lint: install
	$(VENV)/bin/ruff check defectfill gan_baselines train_scripts tests

clean:
	rm -rf runs build *.egg-info
