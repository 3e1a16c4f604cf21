"""The fp32 cloud baseline: full fine-tuning of the dequantised network in TensorFlow.

    python benchmarks/fp32_finetune.py JOB.npz METRICS.json

Runs in its own process and never imports tflm_train or tflite_micro (they must
not share a process with TensorFlow). JOB.npz, written by accuracy.py, holds the
float network (float_network.py), the int8 datasets (x_train/y_train, x_val/y_val and,
unless sweeping, x_test/y_test; dequantised here with the input's scale and zero
point), the sample order and the learning rate of every step: the int8 runs' batch-1 SGD with the
same order and schedule, so only the arithmetic differs. Float SGD updates every
weight and bias (w -= lr * dL/dw). Deterministic: TensorFlow's op determinism is on.

METRICS.json: initial and per-epoch eval (x_val) accuracy, per-epoch train loss and
accuracy, test accuracy, the initial logits of the first `probe_count` x_val images
(the sanity check against the int8 model) and the wall-clock seconds.
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

EVAL_BATCH = 250
ACTIVATIONS = {"NONE": tf.identity, "RELU": tf.nn.relu, "RELU6": tf.nn.relu6}


class FloatNetwork:
    """The network of float_network.export() as trainable TensorFlow variables."""

    def __init__(self, job):
        self.spec = json.loads(str(job["network"]))
        self.params = {op["params"]: (tf.Variable(job[op["params"] + "/weight"]),
                                      tf.Variable(job[op["params"] + "/bias"]))
                       for op in self.spec["ops"] if "params" in op}
        self.variables = [v for pair in self.params.values() for v in pair]

    def dequantize(self, x_int8):
        scale, zero_point = self.spec["input_scale"], self.spec["input_zero_point"]
        return (tf.cast(x_int8, tf.float32) - zero_point) * scale

    def logits(self, x):
        values = {self.spec["input"]: x}
        for op in self.spec["ops"]:
            inputs = [values[t] for t in op["inputs"]]
            values[op["output"]] = self._apply(op, inputs)
        return values[self.spec["logits"]]

    def _apply(self, op, inputs):
        kind = op["kind"]
        if kind == "PAD":
            return tf.pad(inputs[0], op["paddings"])
        if kind == "ADD":
            return inputs[0] + inputs[1]
        if kind == "AVERAGE_POOL_2D":
            return tf.reduce_mean(inputs[0], axis=[1, 2], keepdims=True)
        weight, bias = self.params[op["params"]]
        if kind == "CONV_2D":
            y = tf.nn.conv2d(inputs[0], weight, op["stride"], op["padding"])
        elif kind == "DEPTHWISE_CONV_2D":
            y = tf.nn.depthwise_conv2d(inputs[0], weight, [1, op["stride"], op["stride"], 1], op["padding"])
        else:
            y = tf.matmul(tf.reshape(inputs[0], [-1, weight.shape[0]]), weight)
        return ACTIVATIONS[op["activation"]](y + bias)


def finetune(job) -> dict:
    started = time.perf_counter()
    network = FloatNetwork(job)
    x_train = tf.constant(job["x_train"])
    y_train = tf.constant(job["y_train"].astype(np.int32))

    @tf.function
    def sgd_step(row, learning_rate):
        x = network.dequantize(x_train[row][None])
        label = y_train[row][None]
        with tf.GradientTape() as tape:
            logits = network.logits(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(label, logits))
        for variable, gradient in zip(network.variables, tape.gradient(loss, network.variables)):
            variable.assign_sub(learning_rate * gradient)
        return loss, tf.argmax(logits[0], output_type=tf.int32) == label[0]

    predict = tf.function(lambda x: tf.argmax(network.logits(network.dequantize(x)), axis=1, output_type=tf.int32))

    def accuracy(x, y) -> float:
        predicted = np.concatenate([predict(tf.constant(x[i:i + EVAL_BATCH])).numpy()
                                    for i in range(0, len(x), EVAL_BATCH)])
        return float(np.mean(predicted == y))

    probe = job["x_val"][:int(job["probe_count"])]
    probe_logits = network.logits(network.dequantize(tf.constant(probe))).numpy()
    initial = accuracy(job["x_val"], job["y_val"])
    learning_rates = job["learning_rates"]
    epochs = []
    for epoch, order in enumerate(job["order"]):
        loss_sum, correct = 0.0, 0
        for i, row in enumerate(order):
            loss, hit = sgd_step(tf.constant(row, tf.int32),
                                 tf.constant(learning_rates[epoch * len(order) + i], tf.float32))
            loss_sum += float(loss)
            correct += int(hit)
        epochs.append({"train_loss": loss_sum / len(order), "train_accuracy": correct / len(order),
                       "eval_accuracy": accuracy(job["x_val"], job["y_val"])})
    return {"initial_eval_accuracy": initial,
            "final_eval_accuracy": epochs[-1]["eval_accuracy"] if epochs else initial,
            "epochs": epochs,
            "test_accuracy": accuracy(job["x_test"], job["y_test"]) if "x_test" in job else None,
            "probe_logits": probe_logits.tolist(),
            "seconds": time.perf_counter() - started}


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: fp32_finetune.py JOB.npz METRICS.json")
    tf.config.experimental.enable_op_determinism()
    try:
        with np.load(sys.argv[1], allow_pickle=False) as archive:
            job = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        sys.exit(f"fp32_finetune: error: cannot read {sys.argv[1]}: {exc}")
    metrics = finetune(job)
    with open(sys.argv[2], "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
