# Dev runtime, tests, demo and benchmarks. Every target works on a bare Linux machine that
# reaches only the package registries. `make dev` is idempotent: stamps skip finished steps.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
COMFY := .comfyui
PACK_LINK := $(COMFY)/custom_nodes/comfyui-wan22
PYTEST_ARGS ?=

.PHONY: dev browser test test-unit test-server lint demo bench run clean-dev gpu-kit

dev: $(VENV)/.stamp-dev $(COMFY)/.stamp $(PACK_LINK) browser

$(VENV)/.stamp-torch: constraints.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt torch torchvision
	touch $@

$(COMFY)/.stamp: $(VENV)/.stamp-torch scripts/install_comfyui.sh constraints.txt
	bash scripts/install_comfyui.sh $(VPY)
	touch $@

$(VENV)/.stamp-dev: $(COMFY)/.stamp requirements.txt requirements-dev.txt constraints.txt
	$(VPY) -m pip install -q -c constraints.txt -r requirements.txt -r requirements-dev.txt
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it; its own browser download cannot be
# fetched here). The script returns at once when /usr/bin/chromium is there.
browser:
	bash scripts/install_browser.sh

# The pack is linked, not copied, so edits show up on the next server start.
$(PACK_LINK): $(COMFY)/.stamp
	mkdir -p $(COMFY)/custom_nodes
	ln -sfn "$(CURDIR)" $(PACK_LINK)

test: dev gpu-kit
	$(VPY) -m pytest $(PYTEST_ARGS)

test-unit: dev
	$(VPY) -m pytest tests/unit $(PYTEST_ARGS)

test-server: dev
	$(VPY) -m pytest tests/server $(PYTEST_ARGS)

lint: dev
	$(VPY) -m ruff check .

# Starts the real ComfyUI with the pack on http://127.0.0.1:8188 (CPU).
run: dev
	cd $(COMFY) && ../$(VPY) main.py --cpu --listen 127.0.0.1 --port 8188 --disable-auto-launch

demo: dev
	$(VPY) -m scripts.demo

bench: dev
	$(VPY) -m bench $(BENCH_ARGS)

clean-dev:
	rm -rf $(VENV) $(COMFY) .cache

# .gpu-kit/: ComfyUI's Python tree and the wheels a bare GPU machine lacks for bench/gpu/run.sh
# (bench/gpu/README.md). Needs only python3 with pip and the registry; kept when up to date.
gpu-kit:
	$(PYTHON) -m bench.gpu.build_kit
