"""Transfer-learning accuracy vs measured training memory on Fashion-MNIST, as the paper compares its methods.

    python benchmarks/accuracy.py [--quick | --sweep] [--only KEY,...] [--seed 0] [--jobs 1] [--shared ../shared]
        [--data /usr/share/datasets/fashion-mnist] [--out build/accuracy]
        [--results benchmarks/RESULTS.md] [--plot accuracy_vs_memory.png]

ImageNet-pretrained MCUNet-5FPS and MobileNetV2-w0.35 (../shared, imported with a new
10-class head) are fine-tuned with batch-1 SGD and a cosine schedule on a fixed,
stratified Fashion-MNIST subset, by every method of the paper's comparison: fp32 full
fine-tuning in TensorFlow (fp32_finetune.py, its own process), int8 SGD without QAS,
int8 + QAS with a full update, with each published sparse scheme, with the last k
layers, bias-only and classifier-only, and with stochastic instead of nearest rounding.
Every int8 run trains in the stock TFLM interpreter with our kernels (tflm_train.train)
and reports the measured peak SRAM of its training step (tflm_train.measure).

Learning rates are one per method family (LEARNING_RATES), chosen by `--sweep`: a
short run of each family's representative at every rate of SWEEP_GRID on a held-out
validation split (disjoint from the train and test subsets), both models. A
stochastic-rounding run uses its family's rate: it differs from its nearest-rounding
twin in the rounding alone.

Writes OUT/accuracy.json (everything but the `seconds` fields is a function of the
seed), prints the markdown table, writes the accuracy-vs-memory plot and, with
--results, replaces the generated block of RESULTS.md's Accuracy section.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import accuracy_report  # noqa: E402
import float_network  # noqa: E402
from tflm_train import data, ir, measure, tflm_runner, train  # noqa: E402
from tflm_train.converter import pipeline, scheme as schemes  # noqa: E402
from tflm_train.errors import UserError  # noqa: E402
from tflm_train.importer.mcunet import import_mcunet  # noqa: E402

MODELS = ("mcunet-5fps", "mbv2-w0.35")
PAPER_SCHEMES = os.path.join(REPO, "examples", "paper_schemes")
FP32_FINETUNE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fp32_finetune.py")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
CLASSES = 10
# The paper's (and the pickles') input resolution: peak SRAM is also measured there.
PAPER_RESOLUTION = 128
# Fashion-MNIST as stored: 28x28 grayscale pixels, kept as uint8 for subsetting.
RAW_PIXELS = data.InputSpec((28, 28, 1), np.dtype(np.uint8), 0.0, 1.0, CLASSES)
SCORES_OUTPUT = 0          # import-mcunet models have one output, the softmax scores
PROBE_IMAGES = 8           # validation images whose logits the int8 and float networks must agree on
MIN_PROBE_CORRELATION = 0.95

# Chosen with --sweep (RESULTS.md, "Learning rates"): the best mean validation accuracy over both models.
LEARNING_RATES = {"fp32": 1e-4, "int8-sgd": 1.0, "qas-full": 3e-4, "qas-fractional": 1e-4, "sparse": 3e-3,
                  "last-k": 3e-3, "bias-only": 3e-3, "classifier-only": 3e-3}
FULL_UPDATE_RATES = (3e-5, 1e-4, 3e-4, 1e-3)
PARTIAL_UPDATE_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
SWEEP_GRID = {"fp32": FULL_UPDATE_RATES, "int8-sgd": (1.0, 1e2, 1e4, 1e6), "qas-full": FULL_UPDATE_RATES,
              "qas-fractional": FULL_UPDATE_RATES, "sparse": PARTIAL_UPDATE_RATES, "last-k": PARTIAL_UPDATE_RATES, "bias-only": PARTIAL_UPDATE_RATES,
              "classifier-only": (1e-3, 3e-3, 1e-2, 3e-2)}


@dataclasses.dataclass(frozen=True)
class Settings:
    models: tuple
    resolution: int
    train_samples: int
    val_samples: int
    test_samples: int
    epochs: int
    runs: tuple | None = None      # run keys; None: every run

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# 64x64: see RESULTS.md (step times at 64/96/128 and why the lower resolution loses little here).
FULL = Settings(MODELS, 64, train_samples=5000, val_samples=200, test_samples=2000, epochs=1)
QUICK = Settings(MODELS[:1], 64, train_samples=200, val_samples=100, test_samples=200, epochs=1,
                 runs=("fp32", "sparse-49kb", "classifier"))
# A fifth of the benchmark's training steps per rate.
SWEEP = Settings(MODELS, 64, train_samples=1000, val_samples=300, test_samples=0, epochs=1)


@dataclasses.dataclass(frozen=True)
class Run:
    key: str
    label: str
    family: str                    # a LEARNING_RATES key
    scheme: object = None          # graph -> scheme JSON dict; None: the fp32 TensorFlow run
    qas: bool = True
    rounding: str = "nearest"
    budget_kb: int | None = None   # a published scheme's memory budget
    fractional: bool = False       # convert --fractional-weights


# ---------------------------------------------------------------- schemes

def body_layers(graph: ir.Graph) -> list:
    """Op indices of the conv layers before the classifier (import-mcunet's last conv layer)."""
    return [graph.ops.index(op) for op in schemes.conv_layers(graph)[:-1]]


def full_update(graph: ir.Graph) -> dict:
    return {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in body_layers(graph)], "classifier": True}


def last_layers(k: int):
    def scheme(graph: ir.Graph) -> dict:
        last = body_layers(graph)[-k:]
        return {"bias": last, "weights": [{"layer": i, "ratio": 1} for i in last], "classifier": True}
    return scheme


def biases_of(published: dict):
    """Bias-only within a published scheme's bias window (same backward depth, no weights)."""
    return lambda graph: {"n_bias_update": published["n_bias_update"], "classifier": True}


def constant(source: dict):
    return lambda graph: source


def paper_schemes(model: str) -> list:
    """(budget in KB, scheme JSON) of every published scheme of `model`, smallest budget first."""
    found = []
    for name in os.listdir(PAPER_SCHEMES):
        stem, ext = os.path.splitext(name)
        if ext == ".json" and stem.startswith(model + "_") and stem.endswith("kb"):
            found.append((int(stem[len(model) + 1:-2]), schemes.load_scheme_file(os.path.join(PAPER_SCHEMES, name))))
    return sorted(found, key=lambda pair: pair[0])


def runs_for(model: str) -> list:
    published = paper_schemes(model)
    largest_kb, largest = published[-1]
    classifier_only = constant({"bias": "none", "weights": [], "classifier": True})
    return [
        Run("fp32", "fp32 full (TensorFlow)", "fp32"),
        Run("int8-sgd", "int8 SGD full, no QAS", "int8-sgd", full_update, qas=False),
        Run("qas-full", "int8 + QAS full", "qas-full", full_update),
        Run("qas-full-stochastic", "int8 + QAS full, stochastic", "qas-full", full_update, rounding="stochastic"),
        Run("qas-full-fractional", "int8 + QAS full, fractional weights", "qas-fractional", full_update,
            rounding="stochastic", fractional=True),
        *[Run(f"sparse-{kb}kb", f"sparse {kb} KB", "sparse", constant(source), budget_kb=kb)
          for kb, source in published],
        Run(f"sparse-{largest_kb}kb-stochastic", f"sparse {largest_kb} KB, stochastic", "sparse",
            constant(largest), rounding="stochastic", budget_kb=largest_kb),
        Run("last-3", "last 3 layers", "last-k", last_layers(3)),
        Run("last-6", "last 6 layers", "last-k", last_layers(6)),
        Run("bias-window", f"bias-only, {largest['n_bias_update']} layers", "bias-only", biases_of(largest)),
        Run("bias-all", "bias-only, all layers", "bias-only", constant({"bias": "all", "weights": [],
                                                                        "classifier": True})),
        Run("classifier", "classifier-only", "classifier-only", classifier_only),
        Run("classifier-stochastic", "classifier-only, stochastic", "classifier-only", classifier_only,
            rounding="stochastic"),
    ]


def sweep_runs(model: str, families=None) -> list:
    """One representative run per learning-rate family (of `families`; None: every family)."""
    representative = {"int8-sgd": "int8-sgd", "qas-full": "qas-full", "qas-fractional": "qas-full-fractional",
                      "last-k": "last-3", "bias-only": "bias-all",
                      "classifier-only": "classifier", "fp32": "fp32"}
    runs = runs_for(model)
    largest_sparse = [r for r in runs if r.family == "sparse" and r.rounding == "nearest"][-1]
    return [largest_sparse if family == "sparse" else next(r for r in runs if r.key == representative[family])
            for family in families or SWEEP_GRID]


# ---------------------------------------------------------------- data

def fashion_mnist_subsets(folder: str, settings: Settings, seed: int) -> dict:
    """Disjoint stratified subsets as uint8 28x28 pixels: train and val from the training file, test from t10k."""
    train_pool = data.load(idx_images(folder, "train"), RAW_PIXELS)
    train_rows, val_rows = stratified_rows(train_pool.y, (settings.train_samples, settings.val_samples), seed)
    subsets = {"train": (train_pool.x[train_rows], train_pool.y[train_rows]),
               "val": (train_pool.x[val_rows], train_pool.y[val_rows])}
    if settings.test_samples:
        test_pool = data.load(idx_images(folder, "t10k"), RAW_PIXELS)
        (test_rows,) = stratified_rows(test_pool.y, (settings.test_samples,), seed)
        subsets["test"] = (test_pool.x[test_rows], test_pool.y[test_rows])
    return subsets


def idx_images(folder: str, split: str) -> str:
    for name in (f"{split}-{data.IDX_IMAGES}.gz", f"{split}-{data.IDX_IMAGES}"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise UserError(f"{folder}: no {split}-{data.IDX_IMAGES}[.gz] (Debian package dataset-fashion-mnist)")


def stratified_rows(labels: np.ndarray, counts: tuple, seed: int) -> list:
    """Disjoint sorted row sets, the i-th with counts[i] / CLASSES rows of every class (seeded)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(CLASSES)]
    subsets, start = [], 0
    for count in counts:
        if count % CLASSES:
            raise UserError(f"subset sizes must be multiples of {CLASSES}, got {count}")
        take = count // CLASSES
        subsets.append(np.sort(np.concatenate([rows[start:start + take] for rows in per_class])))
        start += take
    return subsets


def model_datasets(subsets: dict, spec: data.InputSpec, work: str) -> dict:
    """The pixel subsets in the model's input form (resized, RGB, quantised) via tflm_train.data."""
    datasets = {}
    for name, (pixels, labels) in subsets.items():
        path = os.path.join(work, f"fashion_mnist_{name}.npz")
        np.savez(path, x=pixels, y=labels)
        datasets[name] = data.load(path, spec)
        datasets[name].source = f"Fashion-MNIST {name} subset ({len(labels)})"
    return datasets


# ---------------------------------------------------------------- runs

@dataclasses.dataclass
class Subject:
    """One model, imported for the benchmark, and the data in its input form."""
    name: str
    model_bytes: bytes            # at the benchmark resolution, with a new CLASSES-class head
    paper_model_bytes: bytes      # the same at PAPER_RESOLUTION, for its memory only
    datasets: dict                # "train", "val" and (unless sweeping) "test": tflm_train.data.Dataset


def prepare(model: str, shared: str, subsets: dict, settings: Settings, seed: int, work: str) -> Subject:
    pickle_path = os.path.join(shared, f"{model}.pkl")
    imported = {resolution: ir.emit(import_mcunet(pickle_path, num_classes=CLASSES, resolution=resolution, seed=seed))
                for resolution in (settings.resolution, PAPER_RESOLUTION)}
    model_bytes = imported[settings.resolution]
    return Subject(model, model_bytes, imported[PAPER_RESOLUTION], model_datasets(subsets, input_spec(model_bytes), work))


def input_spec(model_bytes: bytes) -> data.InputSpec:
    """What the model's image input takes (InputSpec reads a training model; any scheme has the same input)."""
    graph = ir.load(model_bytes)
    pipeline.convert(graph, {"bias": "none", "weights": [], "classifier": True})
    return data.InputSpec.of_model(graph)


def int8_run(subject: Subject, run: Run, config: train.TrainConfig) -> dict:
    """Converts with the run's scheme, trains and tests in TFLM, and measures the training step's arena."""
    options = pipeline.ConvertOptions(rounding=run.rounding, qas=run.qas, fractional_weights=run.fractional)
    training = convert(subject.model_bytes, run, options)
    datasets = subject.datasets
    with tflm_runner.TflmSession(training, preserve_all_tensors=True) as session:
        metrics = train.train(training, datasets["train"], datasets["val"], config, progress=None,
                              session=session).metrics
        test = train.evaluate(session, datasets["test"], SCORES_OUTPUT) if "test" in datasets else None
    paper_training = convert(subject.paper_model_bytes, run, options)
    return {"peak_sram_bytes": measure.measure(training)["peak_sram_bytes"],
            "peak_sram_bytes_at_paper_resolution": measure.measure(paper_training)["peak_sram_bytes"],
            "trainable_bytes": metrics["model"]["trainable_bytes"],
            "initial_eval_accuracy": metrics["initial_eval_accuracy"], "epochs": metrics["epochs"],
            "final_eval_accuracy": metrics["final_eval_accuracy"], "test_accuracy": test,
            "seconds": metrics["seconds"]}


def convert(model_bytes: bytes, run: Run, options: pipeline.ConvertOptions) -> bytes:
    graph = ir.load(model_bytes)
    pipeline.convert(graph, run.scheme(graph), options)
    return ir.emit(graph)


def fp32_run(subject: Subject, config: train.TrainConfig, work: str) -> dict:
    """The TensorFlow baseline in its own process, with the int8 runs' sample order and schedule."""
    datasets = subject.datasets
    samples = len(datasets["train"])
    total = config.epochs * samples
    # The order train.train() visits the training samples in for this seed.
    rng = np.random.default_rng(config.seed)
    job = float_network.export(ir.load(subject.model_bytes))
    job.update(order=np.array([rng.permutation(samples) for _ in range(config.epochs)], np.int64),
               learning_rates=np.array([config.learning_rate(s, total) for s in range(total)], np.float32),
               probe_count=np.array(PROBE_IMAGES))
    for name, dataset in datasets.items():
        job.update({f"x_{name}": dataset.x, f"y_{name}": dataset.y})
    job_path = os.path.join(work, f"{subject.name}_fp32_lr{config.lr:g}.npz")
    metrics_path = os.path.splitext(job_path)[0] + ".json"
    np.savez(job_path, **job)
    result = subprocess.run([sys.executable, FP32_FINETUNE, job_path, metrics_path], capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise UserError(f"the fp32 TensorFlow run failed: {lines[-1] if lines else f'exit status {result.returncode}'}")
    with open(metrics_path) as f:
        return json.load(f)


def probe_agreement(model_bytes: bytes, float_logits: list, probe: np.ndarray) -> dict:
    """How closely the dequantised float network's logits track the int8 model's, before any training."""
    graph = ir.load(model_bytes)
    logits = next(op.inputs[0] for op in graph.ops if op.kind == "SOFTMAX")
    index = graph.referenced_tensors().index(logits)
    quantized = []
    with tflm_runner.TflmSession(model_bytes, preserve_all_tensors=True) as session:
        for image in probe:
            session.invoke([image[None]])
            quantized.append(session.tensor(index).reshape(-1))
    scale = float(logits.quant.scale[0])
    int8 = (np.array(quantized, np.float64) - int(logits.quant.zero_point[0])) * scale
    real = np.array(float_logits, np.float64)
    agreement = {"images": len(probe), "max_abs_diff": float(np.abs(real - int8).max()),
                 "logit_lsb": scale, "correlation": float(np.corrcoef(real.ravel(), int8.ravel())[0, 1]),
                 "argmax_agreement": float(np.mean(real.argmax(1) == int8.argmax(1)))}
    if agreement["correlation"] < MIN_PROBE_CORRELATION:
        raise UserError(f"the float network does not track the int8 model (logit correlation "
                        f"{agreement['correlation']:.3f} < {MIN_PROBE_CORRELATION}): the fp32 baseline is invalid")
    return agreement


# ---------------------------------------------------------------- driver

def benchmark_model(subject: Subject, plan: list, settings: Settings, seed: int, work: str, jobs: int) -> dict:
    """Trains every (run, learning rate) of `plan` on one model, `jobs` at a time (each in its own processes)."""
    def one(run_and_lr) -> dict:
        run, lr = run_and_lr
        config = train.TrainConfig(epochs=settings.epochs, lr=lr, lr_schedule="cosine", seed=seed)
        if run.scheme is None:
            metrics = fp32_run(subject, config, work)
            metrics.update(peak_sram_bytes=None, peak_sram_bytes_at_paper_resolution=None, trainable_bytes=None)
        else:
            metrics = int8_run(subject, run, config)
        record = {"key": run.key, "label": run.label, "family": run.family, "qas": run.qas,
                  "rounding": run.rounding, "fractional": run.fractional, "budget_kb": run.budget_kb, "lr": lr,
                  **metrics}
        print(accuracy_report.progress_line(subject.name, record), file=sys.stderr, flush=True)
        return record

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        records = list(pool.map(one, plan))
    float_logits = [r.pop("probe_logits") for r in records if "probe_logits" in r]
    probe = probe_agreement(subject.model_bytes, float_logits[0], subject.datasets["val"].x[:PROBE_IMAGES]) \
        if float_logits else None
    return {"probe_agreement": probe, "runs": records}


def run_plan(model: str, settings: Settings, sweep: bool) -> list:
    """(run, learning rate) pairs: every family representative at every swept rate, or the benchmark's runs."""
    if sweep:
        return [(run, lr) for run in sweep_runs(model, settings.runs) for lr in SWEEP_GRID[run.family]]
    return [(run, LEARNING_RATES[run.family]) for run in runs_for(model)
            if settings.runs is None or run.key in settings.runs]


def run_benchmark(args, settings: Settings, sweep: bool) -> dict:
    started = time.perf_counter()
    work = os.path.join(args.out, "work")
    os.makedirs(work, exist_ok=True)
    subsets = fashion_mnist_subsets(args.data, settings, args.seed)
    results = {"settings": settings.to_json(), "seed": args.seed, "sweep": sweep,
               "learning_rates": {f: SWEEP_GRID[f] for f in settings.runs or SWEEP_GRID} if sweep else LEARNING_RATES,
               "data": {name: len(labels) for name, (_, labels) in subsets.items()}, "models": {}}
    for model in settings.models:
        subject = prepare(model, args.shared, subsets, settings, args.seed, work)
        results["models"][model] = benchmark_model(subject, run_plan(model, settings, sweep), settings, args.seed,
                                                   work, args.jobs)
    results["seconds"] = time.perf_counter() - started
    return results


def only(settings: Settings, keys: tuple, parser: argparse.ArgumentParser) -> Settings:
    """`settings` restricted to the runs `keys` (each must be one of its runs, for some model)."""
    known = list(dict.fromkeys(r.key for model in settings.models for r in runs_for(model)
                               if settings.runs is None or r.key in settings.runs))
    unknown = [k for k in keys if k not in known]
    if unknown:
        parser.error(f"--only: unknown run {unknown[0]!r} (runs: {', '.join(known)})")
    return dataclasses.replace(settings, runs=keys)


class OneLineErrors(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main() -> None:
    parser = OneLineErrors(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one model, tiny subsets, three runs (CI)")
    mode.add_argument("--sweep", action="store_true", help="learning-rate sweep on the validation split")
    parser.add_argument("--only", help="comma-separated run keys (e.g. classifier,sparse-49kb) to run alone; "
                                       "with --sweep, families (e.g. qas-full,fp32)")
    parser.add_argument("--seed", type=int, default=0, help="subsets, new head, sample order")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (results do not depend on it)")
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared"),
                        help="reference data directory with models/tiny-training/")
    parser.add_argument("--data", default=FASHION_MNIST, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=os.path.join(REPO, "build", "accuracy"), help="output directory")
    parser.add_argument("--results", help="RESULTS.md whose generated Accuracy block to replace")
    parser.add_argument("--plot", help="accuracy-vs-memory plot (default OUT/accuracy_vs_memory.png)")
    args = parser.parse_args()
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    args.shared = os.path.join(args.shared, "models", "tiny-training")
    missing = [m for m in MODELS if not os.path.isfile(os.path.join(args.shared, f"{m}.pkl"))]
    if missing:
        parser.error(f"{os.path.join(args.shared, missing[0])}.pkl not found (pass --shared)")
    if not os.path.isdir(args.data):
        parser.error(f"{args.data} not found (apt-get install dataset-fashion-mnist, or pass --data)")
    if args.results and not os.path.isfile(args.results):
        parser.error(f"{args.results} not found")
    settings = SWEEP if args.sweep else QUICK if args.quick else FULL
    if args.only and args.sweep:
        families = tuple(args.only.split(","))
        unknown = [f for f in families if f not in SWEEP_GRID]
        if unknown:
            parser.error(f"--only with --sweep: unknown family {unknown[0]!r} (families: {', '.join(SWEEP_GRID)})")
        settings = dataclasses.replace(settings, runs=families)
    elif args.only:
        settings = only(settings, tuple(args.only.split(",")), parser)
    try:
        if args.results:
            accuracy_report.check_block(args.results, accuracy_report.block_name(args.sweep))
        results = run_benchmark(args, settings, args.sweep)
        accuracy_report.write_outputs(results, args.out, args.plot, args.results)
    except UserError as exc:
        sys.exit(f"{parser.prog}: error: {exc}")


if __name__ == "__main__":
    main()
