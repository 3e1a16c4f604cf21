"""Peak SRAM of a training step of the paper's models, measured in the stock TFLM interpreter.

    python benchmarks/memory.py [--shared ../shared] [--out benchmarks] [--models mcunet-5fps,mbv2-w0.35]

For MCUNet-5FPS and MobileNetV2-w0.35 (the reference implementation's int8 ImageNet
models in ../shared, imported with a 10-class head) and every published sparse
scheme (examples/paper_schemes), converts the model for a full update (every bias and
weight; conventional schedule), the sparse scheme without operator reordering and
with it, then measures each in the pinned TFLM wheel (`tflm_train.measure`: the
smallest arena that prepares the model and runs a training step). Prints a markdown
table beside the paper's figures (STM32F746, TinyEngine) and the lower bound of
`memory.lower_bound`, and writes:

    OUT/memory.md             the table
    OUT/memory_bars.png       peak SRAM per scheme: sparse, sparse + reorder, 256 KB line
    OUT/memory_timeline.png   live memory per op, with vs without reordering (largest scheme)

`--update-results` also replaces the generated block in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tflm_train import ir, measure  # noqa: E402
from tflm_train.converter import memory, pipeline, scheme as schemes  # noqa: E402
from tflm_train.importer.mcunet import import_mcunet  # noqa: E402

MODELS = ("mcunet-5fps", "mbv2-w0.35")
NUM_CLASSES = 10
BUDGET_BYTES = 256 * 1024
# The paper's Figure (STM32F746, KB): full update / sparse / sparse + reorder.
PAPER_KB = {"mcunet-5fps": (3650, 560, 173), "mbv2-w0.35": (2939, 335, 141)}
PAPER_NOTE = ("Paper, MCUNet's three schemes (which ones is not stated): 488 / 509 / 560 KB without "
              "reordering, 134 / 160 / 173 KB with it.")
RESULTS_BEGIN, RESULTS_END = "<!-- memory.py: begin -->", "<!-- memory.py: end -->"


@dataclasses.dataclass
class Run:
    model: str
    scheme: str           # "full" or the published scheme's file stem
    reorder: bool
    peak_sram_bytes: int
    estimated_bytes: int
    lower_bound_bytes: int
    trainable_bytes: int
    seconds: float        # convert + measure
    timeline: list

    @property
    def config(self) -> str:
        if self.scheme == "full":
            return "full update"
        return "sparse + reorder" if self.reorder else "sparse"


def full_scheme(graph: ir.Graph) -> dict:
    convs = [i for i, op in enumerate(graph.ops) if op.kind in schemes.LAYER_KINDS]
    return {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in convs[:-1]], "classifier": True}


def published_schemes(model: str) -> list:
    folder = os.path.join(REPO, "examples", "paper_schemes")
    names = sorted((f for f in os.listdir(folder) if f.startswith(model + "_") and f.endswith(".json")),
                   key=lambda f: int(f[len(model) + 1:].split("kb")[0]))
    return [(name[:-len(".json")], schemes.load_scheme_file(os.path.join(folder, name))) for name in names]


def run(model: str, model_bytes: bytes, scheme_name: str, scheme_source: dict, reorder: bool) -> Run:
    start = time.perf_counter()
    graph = ir.load(model_bytes)
    pipeline.convert(graph, scheme_source, pipeline.ConvertOptions(reorder=reorder))
    training = ir.emit(graph)
    measured = measure.measure(training)
    estimate = memory.estimate(graph)
    trainable = sum(t.nbytes for t in graph.referenced_tensors() if t.is_variable)
    return Run(model, scheme_name, reorder, measured["peak_sram_bytes"], estimate.arena_bytes,
               memory.lower_bound(graph), trainable, time.perf_counter() - start, estimate.timeline)


def runs_for(model: str, shared: str) -> list:
    start = time.perf_counter()
    graph = import_mcunet(os.path.join(shared, "models", "tiny-training", f"{model}.pkl"), num_classes=NUM_CLASSES)
    model_bytes = ir.emit(graph)
    import_seconds = time.perf_counter() - start
    out = [run(model, model_bytes, "full", full_scheme(ir.load(model_bytes)), reorder=False)]
    for name, source in published_schemes(model):
        for reorder in (False, True):
            out.append(run(model, model_bytes, name, source, reorder))
            print(f"  {model} {name} {out[-1].config}: {out[-1].peak_sram_bytes / 1024:.1f} KB", file=sys.stderr)
    for r in out:
        r.seconds += import_seconds
    return out


def kb(n: int) -> str:
    return f"{n / 1024:,.1f}"


def table(runs: list) -> str:
    rows = ["| model | scheme | configuration | peak SRAM (KB, measured) | fits 256 KB | paper (KB) | "
            "lower bound (KB) | ours / bound | trainable (KB) | import + convert + measure (s) |",
            "|---|---|---|---:|:---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        full, sparse, reordered = PAPER_KB[r.model]
        paper = full if r.scheme == "full" else (reordered if r.reorder else sparse)
        rows.append(f"| {r.model} | {r.scheme} | {r.config} | {kb(r.peak_sram_bytes)} | "
                    f"{'yes' if r.peak_sram_bytes <= BUDGET_BYTES else 'no'} | {paper:,} | "
                    f"{kb(r.lower_bound_bytes)} | {r.peak_sram_bytes / r.lower_bound_bytes:.2f} | "
                    f"{kb(r.trainable_bytes)} | {r.seconds:.1f} |")
    return "\n".join(rows) + "\n\n" + PAPER_NOTE + "\n"


def plot_bars(runs: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparse = [r for r in runs if r.scheme != "full"]
    labels = sorted({r.scheme for r in sparse}, key=lambda s: [r.scheme for r in sparse].index(s))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.38
    for offset, reorder, name in ((-width / 2, False, "sparse"), (width / 2, True, "sparse + reorder")):
        values = [next(r.peak_sram_bytes for r in sparse if r.scheme == s and r.reorder == reorder) / 1024
                  for s in labels]
        ax.bar([i + offset for i in range(len(labels))], values, width, label=name)
    ax.axhline(BUDGET_BYTES / 1024, color="red", linestyle="--", label="256 KB")
    # The paper's sparse + reorder figure of each model, across that model's schemes.
    for model, (_, _, paper) in PAPER_KB.items():
        columns = [i for i, s in enumerate(labels) if any(r.model == model and r.scheme == s for r in sparse)]
        if columns:
            ax.hlines(paper, columns[0] - 0.45, columns[-1] + 0.45, colors="black", linestyles=":",
                      label="paper, sparse + reorder" if model == MODELS[0] else None)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("peak SRAM of a training step (KB)")
    ax.set_title("Measured in the stock TFLM interpreter (x86-64 wheel)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_timeline(runs: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = max((r for r in runs if r.scheme != "full"), key=lambda r: r.peak_sram_bytes)
    pair = [r for r in runs if r.model == largest.model and r.scheme == largest.scheme]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for r in sorted(pair, key=lambda r: r.reorder):
        ax.plot([b / 1024 for b in r.timeline], label=f"{r.config} (planned tensors)")
    ax.set_xlabel("op index in the training step")
    ax.set_ylabel("live arena tensors (KB)")
    ax.set_title(f"{largest.model}, scheme {largest.scheme}: live memory per op")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def update_results(markdown: str, command: str) -> None:
    path = os.path.join(REPO, "benchmarks", "RESULTS.md")
    with open(path) as f:
        text = f.read()
    block = f"{RESULTS_BEGIN}\nCommand: `{command}`\n\n{markdown}{RESULTS_END}"
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        text = head + block + rest.split(RESULTS_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Peak SRAM of a training step (paper models)\n\n" + block + "\n"
    _write_atomic(path, text)


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--update-results", action="store_true")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        print(f"memory.py: error: unknown model(s) {', '.join(unknown)} (choose from {', '.join(MODELS)})",
              file=sys.stderr)
        return 1
    for m in models:
        if not os.path.isfile(os.path.join(args.shared, "models", "tiny-training", f"{m}.pkl")):
            print(f"memory.py: error: {m}.pkl not found under {args.shared}/models/tiny-training", file=sys.stderr)
            return 1
    runs = [r for m in models for r in runs_for(m, args.shared)]
    markdown = table(runs)
    print(markdown)
    os.makedirs(args.out, exist_ok=True)
    _write_atomic(os.path.join(args.out, "memory.md"), markdown)
    _write_atomic(os.path.join(args.out, "memory.json"), json.dumps(
        [{k: v for k, v in dataclasses.asdict(r).items() if k != "timeline"} for r in runs], indent=1))
    plot_bars(runs, os.path.join(args.out, "memory_bars.png"))
    plot_timeline(runs, os.path.join(args.out, "memory_timeline.png"))
    if args.update_results:
        update_results(markdown, "python benchmarks/memory.py --update-results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
