"""Host training loop: batch-1 SGD through the stock TFLM interpreter, exactly as a device runs it.

One invoke per training sample (label >= 0: forward, loss, backward, in-place
updates); evaluation invokes with label -1 (forward only) and takes the argmax
of the model's class output. Everything but the wall-clock `seconds` in the
metrics is a function of the model, the data and the config (seed included).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time

import numpy as np

from tflm_train import ir, state as states
from tflm_train.converter import metadata
from tflm_train.data import Dataset
from tflm_train.errors import UserError
from tflm_train.schema.training_ops_generated import Rounding
from tflm_train.tflm_runner import TflmSession

LR_SCHEDULES = ("cosine", "constant")
INFERENCE_LABEL = np.array([-1], np.int32)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    lr: float = 0.01
    lr_schedule: str = "cosine"
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 0:
            raise UserError(f"--epochs must be >= 0, got {self.epochs}")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a finite number >= 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"unknown lr schedule {self.lr_schedule!r} ({' or '.join(LR_SCHEDULES)})")

    def learning_rate(self, step: int, total_steps: int) -> float:
        """Per-step rate; cosine decays from lr towards 0 over all steps of all epochs."""
        if self.lr_schedule == "constant":
            return self.lr
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / total_steps))


@dataclasses.dataclass
class TrainResult:
    metrics: dict
    state: dict       # variable tensor name -> trained contents


def train(model_bytes: bytes, train_set: Dataset, eval_set: Dataset, config: TrainConfig,
          progress=sys.stderr, session: TflmSession | None = None) -> TrainResult:
    """Trains a fresh interpreter over `model_bytes`; progress (a text stream or None) gets the bar.

    `session`: the caller's own (untrained, preserve_all_tensors) session over
    `model_bytes`, to keep using the trained interpreter afterwards.
    """
    config.validate()
    started = time.perf_counter()
    graph = ir.load(model_bytes)
    md = metadata.read(graph)
    variables = states.variables(graph)
    tensors = graph.referenced_tensors()
    rng = np.random.default_rng(config.seed)
    total_steps = config.epochs * len(train_set)
    bar = Progress(progress)
    with contextlib.ExitStack() as owned:
        if session is None:
            # preserve_all_tensors keeps the variables readable; it costs no measurable step time.
            session = owned.enter_context(TflmSession(model_bytes, preserve_all_tensors=True))
        scores = _class_output(session, tensors[md.logits].shape[-1], train_set)
        initial_accuracy = evaluate(session, eval_set, scores, bar, "initial eval")
        epochs = []
        for epoch in range(config.epochs):
            order = rng.permutation(len(train_set))
            loss_sum, correct = 0.0, 0
            bar.start(f"epoch {epoch + 1}/{config.epochs}", len(order))
            for i, row in enumerate(order):
                lr = config.learning_rate(epoch * len(order) + i, total_steps)
                outputs = session.invoke([train_set.x[row][None], train_set.y[row:row + 1],
                                          np.array([lr], np.float32)])
                loss_sum += float(outputs[-1][0])
                correct += int(np.argmax(outputs[scores]) == train_set.y[row])
                bar.step(f"loss {loss_sum / (i + 1):.4f}")
            bar.finish(f"loss {loss_sum / len(order):.4f} accuracy {correct / len(order):.3f}")
            epochs.append({"train_loss": loss_sum / len(order), "train_accuracy": correct / len(order),
                           "eval_accuracy": evaluate(session, eval_set, scores, bar, "eval")})
        trained = {tensors[t.variable].name: session.tensor(t.variable).reshape(tensors[t.variable].shape)
                   for t in md.trainables}
    metrics = {
        "model": _model_info(model_bytes, graph, md, variables),
        "data": {"train": train_set.source, "train_samples": len(train_set),
                 "eval": eval_set.source, "eval_samples": len(eval_set)},
        "config": dataclasses.asdict(config),
        "initial_eval_accuracy": initial_accuracy,
        "final_eval_accuracy": epochs[-1]["eval_accuracy"] if epochs else initial_accuracy,
        "epochs": epochs,
        "seconds": time.perf_counter() - started,   # the only field that differs between identical runs
    }
    return TrainResult(metrics, trained)


def evaluate(session: TflmSession, dataset: Dataset, scores: int, bar=None, title: str = "eval") -> float:
    """Accuracy of argmax(outputs[scores]) over `dataset`, invoking with label -1 (no update)."""
    bar = bar or Progress(None)
    correct = 0
    bar.start(title, len(dataset))
    for x, y in zip(dataset.x, dataset.y):
        outputs = session.invoke([x[None], INFERENCE_LABEL, np.zeros(1, np.float32)])
        correct += int(np.argmax(outputs[scores]) == y)
        bar.step()
    accuracy = correct / len(dataset)
    bar.finish(f"accuracy {accuracy:.3f}")
    return accuracy


def _class_output(session: TflmSession, num_classes: int, dataset: Dataset) -> int:
    """Index of the model's original output that holds the class scores (the loss is the last output)."""
    outputs = session.invoke([dataset.x[0][None], INFERENCE_LABEL, np.zeros(1, np.float32)])
    for i, out in enumerate(outputs[:-1]):
        if np.size(out) == num_classes:
            return i
    raise UserError(f"the model has no output with {num_classes} class scores")


def _model_info(model_bytes: bytes, graph: ir.Graph, md, variables: list) -> dict:
    return {"sha256": states.model_sha256(model_bytes), "bytes": len(model_bytes),
            "scheme": json.loads(md.scheme_json), "rounding": "stochastic" if md.rounding == Rounding.STOCHASTIC else "nearest",
            "qas": bool(md.qas), "reordered": bool(md.reordered),
            "trainable_tensors": len(variables),
            "trainable_bytes": sum(t.nbytes for _, _, t in metadata.trainable_arena_tensors(graph, md))}


def save_metrics(path: str, metrics: dict) -> None:
    try:
        with open(path, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None


def plot(path: str, metrics: dict) -> None:
    """Loss and accuracy per epoch (eval accuracy from epoch 0 = before training) as an image."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install matplotlib)") from None
    epochs = metrics["epochs"]
    numbers = range(1, len(epochs) + 1)
    figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(numbers, [e["train_loss"] for e in epochs], "o-")
    loss_axes.set(xlabel="epoch", ylabel="train loss", title="loss")
    accuracy_axes.plot(numbers, [e["train_accuracy"] for e in epochs], "o-", label="train")
    accuracy_axes.plot(range(len(epochs) + 1),
                       [metrics["initial_eval_accuracy"]] + [e["eval_accuracy"] for e in epochs], "s-",
                       label="eval")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    accuracy_axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot write plot {path}: {exc}") from None
    finally:
        pyplot.close(figure)


class Progress:
    """A plain-text progress bar (steps/s and a status) on a stream; a redraw at most every 0.1 s.

    On a terminal the bar redraws in place; elsewhere only each phase's final line is written.
    """
    WIDTH = 24

    def __init__(self, stream):
        self._stream = stream
        self._live = bool(stream) and hasattr(stream, "isatty") and stream.isatty()

    def start(self, title: str, total: int) -> None:
        self._title, self._total, self._done = title, total, 0
        self._started = self._drawn = time.perf_counter()

    def step(self, status: str = "") -> None:
        self._done += 1
        now = time.perf_counter()
        if self._live and now - self._drawn >= 0.1:
            self._drawn = now
            self._write("\r" + self._line(status, now))

    def finish(self, status: str = "") -> None:
        if self._stream:
            self._write(("\r" if self._live else "") + self._line(status, time.perf_counter()) + "\n")

    def _line(self, status: str, now: float) -> str:
        filled = self.WIDTH * self._done // max(self._total, 1)
        rate = self._done / max(now - self._started, 1e-9)
        return (f"{self._title:>14s} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                f"{self._done}/{self._total} {rate:6.1f} steps/s {status}").rstrip()

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
