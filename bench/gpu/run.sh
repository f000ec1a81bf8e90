#!/usr/bin/env bash
# The GPU check of issue 15 (bench/gpu/README.md). On the bare GPU machine, from a copy of the
# repository with .gpu-kit/ carried beside it:
#   bash bench/gpu/run.sh [--out DIR] [--cases a,b] [--budget-s S]
# installs the kit's wheels into a temporary folder (no network), then runs `python -m bench.gpu`
# with ComfyUI imported from .gpu-kit/comfyui. `--rehearse` runs the same on this machine's CPU
# at tiny sizes with the project's venv (tests/unit/test_gpu_rehearsal.py does).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
KIT=${WAN22_GPU_KIT:-$REPO/.gpu-kit}
PY=${WAN22_PYTHON:-python3}
for arg in "$@"; do
  [ "$arg" = "--rehearse" ] && PY=${WAN22_PYTHON:-$REPO/.venv/bin/python}
done
if [ ! -f "$KIT/requirements.txt" ] || [ ! -d "$KIT/comfyui" ]; then
  echo "run.sh: no GPU kit at $KIT. Run 'make gpu-kit' where the package registry is reachable, and carry .gpu-kit." >&2
  exit 2
fi
SITE=$(mktemp -d "${TMPDIR:-/tmp}/wan22-gpu-site.XXXXXX")
trap 'rm -rf "$SITE"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
  --find-links "$KIT/wheels" --target "$SITE" -r "$KIT/requirements.txt"
# No bytecode written into the kit (it is carried to the GPU machine as it is).
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
"$PY" -m bench.gpu --comfyui "$KIT/comfyui" "$@"
