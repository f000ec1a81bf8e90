"""The GPU check of issue 15: the pack against native ComfyUI in one process on a bare CUDA machine.

`make gpu-kit` builds `.gpu-kit/` here; `bash bench/gpu/run.sh` runs the check there (see
bench/gpu/README.md); `bash bench/gpu/run.sh --rehearse` runs the same code on this CPU at tiny sizes.
"""
