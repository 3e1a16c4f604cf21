"""Training-step time relative to inference, in the stock TFLM interpreter (host wheel).

    python benchmarks/step_time.py [--runs 30] [--shared ../shared]

For person_detect and MLPerf Tiny VWW converted with a sparse scheme, prints the
median time of a training step (label >= 0), of an inference of the training
model (label -1) and of an inference of the original model, each timed around
interpreter.invoke() inside the worker process, and their ratios (target: a
training step <= 2.0x the original inference), as a markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tflm_train import ir, tflm_runner  # noqa: E402
from tflm_train.converter import pipeline, scheme  # noqa: E402

BENCHMARKS = (
    ("person_detect", "models/tflm/person_detect.tflite", "benchmarks/schemes/person_detect.json"),
    ("MLPerf VWW", "models/mlperf-tiny/visual_wake_words.tflite", "examples/vww/s.json"),
)
WARMUP_INVOKES = 2
TARGET_RATIO = 2.0


def median_ms(model_bytes: bytes, inputs: list, runs: int) -> float:
    with tflm_runner.TflmSession(model_bytes) as session:
        session.time_invokes(inputs, WARMUP_INVOKES)
        return 1e3 * statistics.median(session.time_invokes(inputs, runs))


def image_for(model: ir.Graph) -> np.ndarray:
    """A fixed pseudo-random image in the model's input type (timing does not depend on content)."""
    image = model.inputs[0]
    rng = np.random.default_rng(0)
    if image.dtype == np.int8:
        return rng.integers(-128, 128, image.shape, dtype=np.int8)
    return rng.uniform(0, 1, image.shape).astype(image.dtype)


def measure(name: str, model_path: str, scheme_path: str, runs: int) -> dict:
    original = ir.read_file(model_path)
    graph = ir.load(original)
    pipeline.convert(graph, scheme.load_scheme_file(scheme_path), pipeline.ConvertOptions())
    training = ir.emit(graph)
    image = image_for(graph)
    learning_rate = np.full(1, 1e-3, np.float32)
    step = median_ms(training, [image, np.ones(1, np.int32), learning_rate], runs)
    inference = median_ms(training, [image, np.full(1, -1, np.int32), learning_rate], runs)
    baseline = median_ms(original, [image], runs)
    return {"model": name, "step": step, "inference": inference, "baseline": baseline}


def markdown(rows: list, runs: int) -> str:
    lines = [f"| model | train step (ms) | training model, label -1 (ms) | original inference (ms) "
             f"| step / original | label -1 / original |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['step']:.2f} | {r['inference']:.2f} | {r['baseline']:.2f} "
                     f"| {r['step'] / r['baseline']:.2f}x | {r['inference'] / r['baseline']:.2f}x |")
    lines.append(f"\nMedians of {runs} invokes each (after {WARMUP_INVOKES} warm-up invokes); "
                 f"target: step / original <= {TARGET_RATIO}x.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per median (>= 20)")
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared"),
                        help="reference data directory with models/")
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")
    rows = []
    for name, model, scheme_path in BENCHMARKS:
        model_path = os.path.join(args.shared, model)
        if not os.path.exists(model_path):
            parser.error(f"{model_path} not found (pass --shared)")
        rows.append(measure(name, model_path, os.path.join(REPO, scheme_path), args.runs))
    print(markdown(rows, args.runs))


if __name__ == "__main__":
    main()
