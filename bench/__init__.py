"""Benchmarks of the pack against native ComfyUI on identical random weights (`make bench`).

Each case runs the pack's graph and native ComfyUI's equivalent graph, each in a fresh server
of the same ComfyUI binary, and reports time per step, expert-switch time, VAE decode time, peak
host RSS, peak device memory (GPU) and how far apart the final latents are.
"""
