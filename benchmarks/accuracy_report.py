"""accuracy.py's outputs: the markdown tables, the issue's targets, the accuracy-vs-memory plot, RESULTS.md blocks."""
from __future__ import annotations

import json
import os

from tflm_train.errors import UserError

# The issue's targets, in accuracy points.
QAS_VS_FP32_POINTS = 1.0
SPARSE_VS_QAS_POINTS = 2.0
SPARSE_BUDGET_KB = 150
NO_QAS_VISIBLE_POINTS = 2.0        # "visibly worse": at least this many points below int8 + QAS


def progress_line(model: str, record: dict) -> str:
    sram = record["peak_sram_bytes"]
    test = record["test_accuracy"]
    return (f"{model:12s} {record['label']:34s} lr {record['lr']:<7g} "
            f"eval {record['initial_eval_accuracy']:.3f} -> {record['final_eval_accuracy']:.3f}"
            + (f"  test {test:.3f}" if test is not None else "")
            + (f"  peak SRAM {sram / 1024:.1f} KiB" if sram else "") + f"  {record['seconds']:.0f} s")


def write_outputs(results: dict, out: str, plot_path: str | None, results_md: str | None) -> None:
    """accuracy[_sweep].json and .md in `out`; the plot and the RESULTS.md block for a benchmark run."""
    stem = "accuracy_sweep" if results["sweep"] else "accuracy"
    text = sweep_markdown(results) if results["sweep"] else results_markdown(results)
    _write_atomic(os.path.join(out, f"{stem}.json"), json.dumps(results, indent=1) + "\n")
    _write_atomic(os.path.join(out, f"{stem}.md"), text + "\n")
    if not results["sweep"]:
        plot(results, plot_path or os.path.join(out, "accuracy_vs_memory.png"))
    if results_md:
        replace_block(results_md, block_name(results["sweep"]), text)
    print(text)


def block_name(sweep: bool) -> str:
    return "accuracy-sweep" if sweep else "accuracy-results"


# ---------------------------------------------------------------- tables

def results_markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"| model | method | lr | peak SRAM, {s['resolution']}² (KiB) | peak SRAM, 128² (KiB) "
             f"| trainable (KiB) | val before → after | test accuracy (%) | seconds |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for model, result in results["models"].items():
        for r in result["runs"]:
            lines.append(f"| {model} | {r['label']} | {r['lr']:g} | {_kib(r['peak_sram_bytes'])} "
                         f"| {_kib(r['peak_sram_bytes_at_paper_resolution'])} | {_kib(r['trainable_bytes'])} "
                         f"| {r['initial_eval_accuracy']:.3f} → {r['final_eval_accuracy']:.3f} "
                         f"| {_percent(r['test_accuracy'])} | {r['seconds']:.0f} |")
    lines += ["", *[f"- {line}" for line in probe_lines(results) + target_lines(results)]]
    return "\n".join(lines)


def probe_lines(results: dict) -> list:
    lines = []
    for model, result in results["models"].items():
        p = result["probe_agreement"]
        if p:
            lines.append(f"{model}: float vs int8 logits before training on {p['images']} validation images: correlation "
                         f"{p['correlation']:.4f}, max |Δ| {p['max_abs_diff']:.2f} ({p['max_abs_diff'] / p['logit_lsb']:.1f} "
                         f"logit LSB), same argmax {p['argmax_agreement']:.0%}")
    return lines


def target_lines(results: dict) -> list:
    """The issue's targets per model, with the numbers, for the runs that were made.

    (c) is int8 + QAS full with nearest rounding (the default), and also with stochastic rounding and with
    fractional weights;
    (b), int8 SGD without QAS, is compared with (c) at the same (nearest) rounding.
    """
    lines = []
    for model, result in results["models"].items():
        test = {r["key"]: _points(r["test_accuracy"]) for r in result["runs"]}
        sparse = [(_points(r["test_accuracy"]), r["label"]) for r in result["runs"]
                  if r["family"] == "sparse" and r["rounding"] == "nearest" and r["budget_kb"] <= SPARSE_BUDGET_KB]
        fp32, no_qas = test.get("fp32"), test.get("int8-sgd")
        for key, name in (("qas-full", "int8 + QAS full"), ("qas-full-stochastic", "int8 + QAS full, stochastic"),
                          ("qas-full-fractional", "int8 + QAS full, fractional weights")):
            qas = test.get(key)
            if qas is None:
                continue
            if fp32 is not None:
                lines.append(_target(model, f"{name} within {QAS_VS_FP32_POINTS:g} point of fp32",
                                     qas >= fp32 - QAS_VS_FP32_POINTS, f"{qas:.1f} vs {fp32:.1f}"))
            if sparse:
                best, label = max(sparse)
                lines.append(_target(model, f"best published sparse scheme ≤ {SPARSE_BUDGET_KB} KB within "
                                            f"{SPARSE_VS_QAS_POINTS:g} points of {name}",
                                     best >= qas - SPARSE_VS_QAS_POINTS, f"{label}: {best:.1f} vs {qas:.1f}"))
        qas = test.get("qas-full")
        if no_qas is not None and qas is not None:
            lines.append(_target(model, f"int8 SGD without QAS visibly worse (≥ {NO_QAS_VISIBLE_POINTS:g} points) "
                                        f"than int8 + QAS full", no_qas <= qas - NO_QAS_VISIBLE_POINTS,
                                 f"{no_qas:.1f} vs {qas:.1f}"))
    return lines


def _target(model: str, what: str, holds: bool, numbers: str) -> str:
    return f"{model}: {what}: **{'holds' if holds else 'missed'}** ({numbers})"


def sweep_markdown(results: dict) -> str:
    """Validation accuracy per family, rate and model, and the rate with the best mean over the models."""
    grid = results["learning_rates"]
    models = list(results["models"])
    runs = [(model, r) for model in models for r in results["models"][model]["runs"]]
    accuracy = {(model, r["family"], r["lr"]): r["final_eval_accuracy"] for model, r in runs}
    width = max(map(len, grid.values()))
    label = {(model, r["family"]): r["label"] for model, r in runs}
    lines = ["| family | model: swept run | " + " | ".join(["lr: val accuracy"] * width) + " | best mean |",
             "|---|---|" + "---:|" * (width + 1)]
    for family, rates in grid.items():
        mean = {lr: sum(accuracy[(m, family, lr)] for m in models) / len(models) for lr in rates}
        best = max(rates, key=mean.get)
        for m in models:
            cells = [f"{lr:g}: {accuracy[(m, family, lr)]:.3f}" for lr in rates]
            lines.append(f"| {family} | {m}: {label[(m, family)]} | " + " | ".join(cells)
                         + f" | {best:g} ({mean[best]:.3f}) |")
    return "\n".join(lines)


def _kib(value) -> str:
    return "—" if value is None else f"{value / 1024:.1f}"


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _points(value):
    return None if value is None else 100 * value


# ---------------------------------------------------------------- plot

SERIES = (  # (legend, run filter, marker and line style)
    ("sparse update (published schemes)", lambda r: r["family"] == "sparse" and r["rounding"] == "nearest", "o-"),
    ("last k layers", lambda r: r["family"] == "last-k", "s-"),
    ("bias-only", lambda r: r["family"] == "bias-only", "^-"),
    ("classifier-only", lambda r: r["family"] == "classifier-only" and r["rounding"] == "nearest", "D"),
    ("int8 + QAS full", lambda r: r["family"] == "qas-full", "*"),
    ("int8 + QAS full, fractional weights", lambda r: r["family"] == "qas-fractional", "h"),
    ("int8 SGD full, no QAS", lambda r: r["family"] == "int8-sgd", "X"),
    ("stochastic rounding", lambda r: r["rounding"] == "stochastic", "P"),
)


def plot(results: dict, path: str) -> None:
    """Test accuracy against measured peak SRAM, one panel per model, as in the paper's Fig. 9.

    The y axis spans the runs that learned; a run far below (no QAS at chance, say) is drawn on
    the bottom edge, and its accuracy is written in the corner.
    """
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    models = list(results["models"])
    figure, axes = pyplot.subplots(1, len(models), figsize=(6.5 * len(models), 5.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        runs = results["models"][model]["runs"]
        bottom = _axis_bottom([100 * r["test_accuracy"] for r in runs])
        for legend, keep, style in SERIES:
            points = sorted((r["peak_sram_bytes"] / 1024, 100 * r["test_accuracy"]) for r in runs if keep(r))
            if points:
                ax.plot(*zip(*[(x, max(y, bottom)) for x, y in points]), style, label=legend, markersize=8)
        for r in runs:
            if r["family"] == "fp32":
                ax.axhline(100 * r["test_accuracy"], color="gray", linestyle="--", label="fp32 full (TensorFlow)")
        off_scale = [f"{r['label']}: {100 * r['test_accuracy']:.1f}%" for r in runs
                     if 100 * r["test_accuracy"] < bottom]
        if off_scale:
            ax.text(0.98, 0.97, "below the axis (drawn on it):\n" + "\n".join(off_scale), transform=ax.transAxes,
                    ha="right", va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.8})
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylim(bottom - 1, None)
        size = results["settings"]["resolution"]
        ax.set(title=f"{model}, Fashion-MNIST, {size}×{size}",
               xlabel="measured peak SRAM of a training step (KiB, log)", ylabel="test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _axis_bottom(accuracies: list) -> float:
    """5 points below the lowest accuracy within 20 points of the best."""
    best = max(accuracies)
    return min(a for a in accuracies if a >= best - 20) - 5


# ---------------------------------------------------------------- files

def check_block(path: str, name: str) -> None:
    """Fails before a long run if `path` lacks the block's markers."""
    _block_span(_read(path), name, path)


def replace_block(path: str, name: str, text: str) -> None:
    content = _read(path)
    start, end = _block_span(content, name, path)
    _write_atomic(path, content[:start] + "\n" + text + "\n" + content[end:])


def _block_span(content: str, name: str, path: str) -> tuple:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, stop = content.find(begin), content.find(end)
    if start < 0 or stop < start:
        raise UserError(f"{path} has no '{begin}' ... '{end}' block")
    return start + len(begin), stop


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write_atomic(path: str, text: str) -> None:
    partial = path + ".partial"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)
