"""`inspect --measure`: the arena measured in the stock TFLM interpreter, and the estimate against it."""
import json
import math
import os

import numpy as np
import pytest

from conftest import REPO, run_cli, shared_path
from tflm_train import ir, measure, tflm_runner
from tflm_train.converter import memory
from tflm_train.errors import UserError

SCHEME = os.path.join(REPO, "benchmarks", "schemes", "person_detect.json")
# The documented bound of README "Estimated vs measured arena".
ESTIMATE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def person_detect_training(tmp_path_factory):
    source = shared_path("models", "tflm", "person_detect.tflite")
    out = str(tmp_path_factory.mktemp("measure") / "pd_train.tflite")
    r = run_cli("convert", source, "--sparse-scheme", SCHEME, "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def measured(person_detect_training):
    r = run_cli("inspect", person_detect_training, "--measure", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_inspect_measure_reports_arena_and_sram(measured):
    arena = measured["measured_arena_bytes"]
    assert arena >= measured["measured_head_bytes"] + measured["measured_tail_bytes"]
    # Trainable weights are arena variables: the persistent tail holds them all.
    assert measured["measured_tail_bytes"] > measured["trainable_bytes"] > 0
    assert measured["peak_sram_bytes"] >= arena


def test_estimate_is_within_tolerance(measured):
    error = (measured["estimated_arena_bytes"] - measured["measured_arena_bytes"]) / measured["measured_arena_bytes"]
    assert measured["arena_estimate_error"] == pytest.approx(error)
    assert abs(error) <= ESTIMATE_TOLERANCE


def test_estimate_of_a_chained_model(person_detect_training, measured):
    """Its first 18 layers run as TFLT_CONV_CHAINs (scratch planned like any output), each written over
    its input (offline-planned offsets): the planned head is exact, the persistent tail within its
    16-byte alignment padding."""
    graph = ir.load(ir.read_file(person_detect_training))
    chains = [op for op in graph.ops if op.kind == "TFLT_CONV_CHAIN"]
    assert sum(len(op.inputs) - 1 for op in chains) == 4 * 18
    assert {id(t) for op in chains for t in (op.inputs[0], op.outputs[0])} == set(graph.arena_offsets)
    assert measured["offline_planned_tensors"] == len(graph.arena_offsets)
    estimate = memory.estimate(graph)
    assert estimate.planned_bytes == measured["measured_head_bytes"]
    assert abs(estimate.arena_bytes - measured["measured_arena_bytes"]) <= 16


def test_training_step_runs_at_measured_arena_and_not_below(person_detect_training, measured):
    data = ir.read_file(person_detect_training)
    inputs = measure.step_inputs(ir.load(data))
    arena = measured["measured_arena_bytes"]
    with tflm_runner.TflmSession(data, arena) as session:
        _, loss = session.invoke(inputs)
    assert loss.shape == (1,) and math.isfinite(float(loss[0])) and loss[0] > 0
    with pytest.raises(UserError):
        tflm_runner.TflmSession(data, int(arena * 0.9))


def test_inference_model_is_measured_too():
    data = ir.read_file(shared_path("models", "tflm", "person_detect.tflite"))
    result = measure.measure(data)
    assert result["peak_sram_bytes"] == result["measured_arena_bytes"]
    assert abs(result["arena_estimate_error"]) <= ESTIMATE_TOLERANCE


def test_time_invokes_times_each_invoke():
    data = ir.read_file(shared_path("models", "tflm", "person_detect.tflite"))
    with tflm_runner.TflmSession(data) as session:
        inputs = [np.zeros((1, 96, 96, 1), np.int8)]
        seconds = session.time_invokes(inputs, 3)
        assert len(seconds) == 3 and all(s > 0 for s in seconds)
        with pytest.raises(UserError):
            session.time_invokes(inputs, 0)
