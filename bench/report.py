"""Markdown tables of a suite's results: one row per graph, then pack / native per case."""

from __future__ import annotations

from .flops import dit_forward_flops
from .suite import CaseResult

GB = 2**30


def _f(value, fmt="{:.3f}", none="–") -> str:
    return none if value is None else fmt.format(value)


def _gb(value) -> str:
    return _f(None if value is None else value / GB, "{:.2f}")


def _ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}x"


def _tflops(result: CaseResult, step_s) -> str:
    if step_s is None or result.runs[0].device_name in (None, "cpu"):
        return "–"
    flops = 2 * dit_forward_flops(result.case.high.config, result.case.tokens())  # two CFG branches
    return f"{flops / step_s / 1e12:.1f}"


def graph_table(results: list[CaseResult]) -> str:
    head = ("| case | size | graph | sampler/scheduler | steps (high+low) | s/step (median of n) | switch s | "
            "VAE decode s | total s | peak RSS GB (idle) | peak device GB | TFLOP/s |")
    rows = [head, "|" + "|".join("---" for _ in range(12)) + "|"]
    for res in results:
        for run in res.runs:
            if not run.ok:
                rows.append(f"| {res.case.name} | {res.case.size} | {run.label} | {run.sampler}/{run.scheduler} | "
                            f"{run.error} |" + " |" * 7)
                continue
            k = run.switch_step
            split = f"{k}+{res.case.steps - k}" if k is not None and res.case.low is not None else f"{res.case.steps}"
            rows.append(
                f"| {res.case.name} | {res.case.size} | {run.label} | {run.sampler}/{run.scheduler} | {split} | "
                f"{_f(run.step_median)} (n={len(run.step_seconds)}) | {_f(run.switch_seconds)} | "
                f"{_f(run.decode_seconds)} | {_f(run.total_seconds, '{:.1f}')} | {_gb(run.peak_rss)} "
                f"({_gb(run.idle_rss)}) | {_gb(run.device_peak)} | {_tflops(res, run.step_median)} |")
    return "\n".join(rows)


def _above_idle(run):
    return None if run.peak_rss is None or run.idle_rss is None else run.peak_rss - run.idle_rss


def ratio_table(results: list[CaseResult]) -> str:
    head = ("| case | s/step | switch | VAE decode | peak RSS | RSS above idle | peak device | "
            "final latents max abs diff (native std) |")
    rows = [head, "|" + "|".join("---" for _ in range(8)) + "|"]
    for res in results:
        p, n = res.pack(), res.run("native")
        if not (p and n and p.ok and n.ok):
            rows.append(f"| {res.case.name} | both graphs did not run |" + " |" * 6)
            continue
        diff = "–" if res.latent_max_abs_diff is None else \
            f"{res.latent_max_abs_diff:.2e} ({_f(res.latent_native_std)})"
        rows.append(
            f"| {res.case.name} | {_ratio(p.step_median, n.step_median)} | {_ratio(p.switch_seconds, n.switch_seconds)}"
            f" | {_ratio(p.decode_seconds, n.decode_seconds)} | {_ratio(p.peak_rss, n.peak_rss)} | "
            f"{_ratio(_above_idle(p), _above_idle(n))} | {_ratio(p.device_peak, n.device_peak)} | {diff} |")
    return "\n".join(rows)


def memory_table(results: list[CaseResult]) -> str:
    """Per phase: the highest polled RSS of the server's process tree (phases are the executing
    node, the sampler's split by the expert it runs), and the most experts resident at once."""
    head = "| case | graph | peak RSS GB (target) | most experts in RAM at once | peak RSS per phase GB |"
    rows = [head, "|---|---|---|---|---|"]
    for res in results:
        for run in res.runs:
            if not run.ok or not run.phase_peak_rss:
                continue
            target = res.case.memory_target_gb
            met = "" if target is None else f" (<= {target:g}: {'met' if run.peak_rss / 1e9 <= target else 'MISSED'})"
            phases = ", ".join(f"{name} {rss / 1e9:.2f}" for name, rss in run.phase_peak_rss.items())
            rows.append(f"| {res.case.name} | {run.label} | {run.peak_rss / 1e9:.2f}{met} | "
                        f"{_f(run.most_experts_resident, '{}')} | {phases} |")
    series = [(res, run) for res in results for run in res.runs if run.rss_after_prompts]
    for res, run in series:
        after = run.rss_after_prompts
        ref = after[min(4, len(after) - 1)]
        drift = max(abs(r / ref - 1) for r in after[min(4, len(after) - 1):])
        rows.append("")
        rows.append(f"{res.case.name}: RSS after each of {len(after)} prompts (GB): "
                    f"{', '.join(f'{r / 1e9:.2f}' for r in after)}; largest drift from prompt "
                    f"{min(5, len(after))} on: {drift:.1%}; from prompt 2 on: "
                    f"{max(abs(r / after[1] - 1) for r in after[1:]) if len(after) > 1 else 0:.1%}")
    return "\n".join(rows)


def render(results: list[CaseResult], header: str = "") -> str:
    parts = [header] if header else []
    shared = any(r.shared_server for r in results)
    where = ("all graphs of a case in one server, peaks reset before each graph" if shared
             else "each graph in a fresh server")
    parts += [f"Per graph ({where}):", "", graph_table(results), "",
              "Pack / native (below 1.00x: the pack is faster or smaller):", "", ratio_table(results), "",
              "Memory over the run (peak: the server's VmHWM; per phase: its process tree's RSS polled "
              "every 0.25 s; GB = 10^9 bytes here):", "", memory_table(results)]
    return "\n".join(parts) + "\n"
