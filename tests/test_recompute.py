"""Rematerialisation (tflm_train/converter/recompute.py): the backward recomputes saved activations
instead of keeping them alive from the forward, where that lowers the arena, with the same training
step bit for bit (numpy reference and the stock TFLM interpreter)."""
import collections

import numpy as np
import pytest

from conftest import run_cli, shared_path
import tf_models
from tflm_train import ir
from tflm_train.converter import memory, metadata, pipeline, recompute
from tflm_train.reference import Executor
from tflm_train.tflm_runner import TflmSession

F32 = np.float32


@pytest.fixture(scope="module")
def small_model():
    return tf_models.mobilenet_like(residual=True, pad=True)


def full_update(graph: ir.Graph) -> dict:
    convs = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    return {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in convs], "classifier": True}


def convert(model: bytes, scheme=full_update, **options) -> tuple:
    graph = ir.load(model)
    pipeline.convert(graph, scheme(graph) if callable(scheme) else scheme, pipeline.ConvertOptions(**options))
    data = ir.emit(graph)
    graph = ir.load(data)
    metadata.read(graph)
    return data, graph


def copies(graph: ir.Graph) -> list:
    return [op for op in graph.ops if any(t.name.endswith("/recomputed") for t in op.outputs)]


def trained_variables(executor: Executor, graph: ir.Graph) -> list:
    md = metadata.read(graph)
    tensors = graph.referenced_tensors()
    return [executor.value(tensors[t.variable]) for t in md.trainables]


def steps(graph: ir.Graph, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    classes = graph.outputs[0].shape[-1]
    return [[rng.integers(-128, 128, graph.inputs[0].shape, dtype=np.int8), np.int32([rng.integers(classes)]),
             F32([lr])] for lr in (0.5, 4.0)]


def test_copies_replace_saved_activations_and_lower_the_arena(small_model):
    _, on = convert(small_model)
    _, off = convert(small_model, recompute=False)
    recomputed = copies(on)
    assert recomputed and not copies(off)
    assert memory.estimate(on).arena_bytes < memory.estimate(off).arena_bytes
    forward = collections.Counter((op.kind, op.custom_options) for op in on.ops if op.role == "forward")
    readers = ir.readers(on.ops)
    for op in recomputed:
        # A copy of a forward op, run in the backward, read only by later ops there.
        assert op.role == "backward" and forward[(op.kind, op.custom_options)] > 0
        at = on.ops.index(op)
        for t in op.outputs:
            assert all(i > at and on.ops[i].role != "forward" for i, _ in readers.get(id(t), []))
    # No backward op reads an activation that a copy recomputes.
    originals = {t.name[:-len("/recomputed")] for op in recomputed for t in op.outputs}
    for op in on.ops:
        if op.role != "forward":
            assert not {t.name for t in op.inputs if t is not None} & originals, op


def test_training_steps_are_identical_with_and_without_copies(small_model):
    data, on = convert(small_model)
    _, off = convert(small_model, recompute=False)
    inputs = steps(on)
    results = []
    for graph in (on, off):
        executor = Executor(graph)
        for step in inputs:
            executor.invoke(step)
        results.append(trained_variables(executor, graph))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    # The stock interpreter runs the copies and agrees with the reference byte for byte.
    md = metadata.read(on)
    with TflmSession(data, preserve_all_tensors=True) as session:
        for step in inputs:
            session.invoke(step)
        for t, expected in zip(md.trainables, results[0]):
            np.testing.assert_array_equal(session.tensor(t.variable).reshape(expected.shape), expected)


def _op(kind, inputs, outputs, role):
    return ir.Op(kind, inputs, outputs, role=role)


def test_no_copy_reads_a_parameter_an_update_already_wrote():
    """Recomputing after the producer's own weight was updated would not give the saved bytes."""
    x = ir.Tensor("x", (1, 4), np.int8)
    w = ir.Tensor("w", (4, 4), np.int8, data=np.zeros((4, 4)), is_variable=True)
    saved = ir.Tensor("saved", (1, 4), np.int8)
    dy = ir.Tensor("dy", (1, 4), np.float32)
    producer = _op("FULLY_CONNECTED", [x, w], [saved], "forward")
    # TFLT_CONV_GRAD_UPDATE's inputs: label, lr, state, dy, y, x, w_train, w_qas, b_train, b_qas.
    update = _op("TFLT_CONV_GRAD_UPDATE", [None, None, None, dy, None, None, w, None, None, None], [], "update")
    reader = _op("TFLT_CONV_GRAD_UPDATE", [None, None, None, dy, None, saved, None, None, None, None], [], "update")
    assert recompute._rematerialised([producer, update, reader], saved, 1) is None
    ops, tensors = recompute._rematerialised([producer, reader, update], saved, 1)
    assert [op.kind for op in ops] == ["FULLY_CONNECTED", "FULLY_CONNECTED", "TFLT_CONV_GRAD_UPDATE",
                                       "TFLT_CONV_GRAD_UPDATE"]
    assert ops[1].inputs == [x, w] and ops[1].outputs == tensors and ops[2].inputs[5] is tensors[0]


def test_cli_no_recompute(small_model, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(small_model)
    scheme = tmp_path / "s.json"
    scheme.write_text('{"bias": "all", "weights": [{"layer": 0, "ratio": 1}, {"layer": 2, "ratio": 1}, '
                      '{"layer": 3, "ratio": 1}], "classifier": true}')
    outputs = {}
    for flag in ((), ("--no-recompute",)):
        out = tmp_path / f"out{len(flag)}.tflite"
        done = run_cli("convert", str(model), "--sparse-scheme", str(scheme), "-o", str(out), *flag)
        assert done.returncode == 0, done.stderr
        outputs[flag] = ir.load_file(str(out))
    assert copies(outputs[()]) and not copies(outputs[("--no-recompute",)])


@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35"])
def test_full_update_of_the_paper_models_recomputes_instead_of_keeping(model):
    from tflm_train.importer.mcunet import import_mcunet
    data = ir.emit(import_mcunet(shared_path("models", "tiny-training", f"{model}.pkl"), num_classes=10))
    on, off = (memory.estimate(convert(data, recompute=flag)[1]).arena_bytes for flag in (True, False))
    assert on < off - 150_000
