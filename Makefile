# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs, runs the small CPU bench end to end
#   make test   creates .venv, installs, installs Debian's chromium when missing (the app's browser
#               test drives it), runs the test suite (offline)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install browser demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian's chromium for tests/test_app_browser.py (Playwright drives it; no browser download):
# apt-get only when `chromium` is missing, as root or through sudo
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

demo: install
	$(VENV)/bin/defectfill demo --out runs/demo

test: install browser
	HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 MPLBACKEND=Agg $(PY) -m pytest -q -p no:cacheprovider tests

bench: install
	$(PY) -m pytest -q -m benchmark tests

lint: install
	$(VENV)/bin/ruff check defectfill gan_baselines train_scripts tests

clean:
	rm -rf runs build *.egg-info
