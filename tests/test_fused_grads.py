"""Fused depthwise → pointwise gradients (tflm_train/converter/fused_grads.py): where it lowers the
arena, TFLT_DEPTHWISE_POINTWISE_GRAD replaces a depthwise input gradient and the conv input
gradient and update reading it (in block mode also the projection's input gradient before them
and the depthwise layer's update), with the same training step bit for bit (numpy reference and
the stock TFLM interpreter) and an estimate that still equals the measured arena."""
import json
import os

import numpy as np
import pytest

from conftest import REPO, run_cli, shared_path
import tf_models
from tflm_train import ir, measure
from tflm_train.converter import fused_grads, memory, metadata, pipeline
from tflm_train.kernels_grad.depthwise_pointwise import BLOCK_INPUT
from tflm_train.reference import Executor
from tflm_train.tflm_runner import TflmSession

F32 = np.float32
FUSED = "TFLT_DEPTHWISE_POINTWISE_GRAD"


def inverted_residual_model(seed: int = 0, size: int = 16) -> bytes:
    """stem conv(s2) → [1×1 expansion → dw → 1×1 projection] + skip → [expansion → dw(s2) → projection]
    → global mean → dense: the expansions' outputs only their depthwise layers read."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inp = tf.keras.Input((size, size, 3), batch_size=1)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inp)
    y = layers.Conv2D(24, 1, activation="relu6")(x)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
    x = layers.Add()([x, layers.Conv2D(8, 1)(y)])
    y = layers.Conv2D(24, 1, activation="relu")(x)
    y = layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, activation="relu6")(y)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(12, 1)(y))
    return tf_models.quantize(tf.keras.Model(inp, layers.Softmax()(layers.Dense(4)(x))), (size, size, 3), seed)


def separable_model(seed: int = 0, size: int = 16) -> bytes:
    """MobileNetV1-like: stem conv(s2) → [dw → 1×1] × 3 → global mean → dense. Without expansion layers
    a 1×1 layer is the projection of the depthwise layer before it and the pointwise layer of the
    one after it."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inp = tf.keras.Input((size, size, 3), batch_size=1)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inp)
    for channels in (12, 12, 16):
        x = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
        x = layers.Conv2D(channels, 1, activation="relu6")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf_models.quantize(tf.keras.Model(inp, layers.Softmax()(layers.Dense(4)(x))), (size, size, 3), seed)


@pytest.fixture(scope="module")
def small_model():
    return inverted_residual_model()


def full_update(graph: ir.Graph) -> dict:
    convs = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    return {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in convs], "classifier": True}


def split_update(graph: ir.Graph) -> dict:
    """Every bias; the pointwise convs' weights split (the first half of their input channels)."""
    pointwise = [i for i, op in enumerate(graph.ops) if op.kind == "CONV_2D" and op.inputs[1].shape[1:3] == (1, 1)]
    return {"bias": "all", "weights": [{"layer": i, "ratio": 0.5} for i in pointwise], "classifier": True}


def convert(model: bytes, scheme=full_update, **options) -> tuple:
    graph = ir.load(model)
    pipeline.convert(graph, scheme(graph) if callable(scheme) else scheme, pipeline.ConvertOptions(**options))
    data = ir.emit(graph)
    graph = ir.load(data)  # tensor indices of this graph are the interpreter's
    return data, graph


def kinds(graph: ir.Graph) -> list:
    return [op.kind for op in graph.ops]


def steps(graph: ir.Graph, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    classes = graph.outputs[0].shape[-1]
    return [[rng.integers(-128, 128, graph.inputs[0].shape, dtype=np.int8), np.int32([rng.integers(classes)]),
             F32([lr])] for lr in (0.5, 4.0)]


def trained_variables(graph: ir.Graph, run) -> list:
    """The trainables after `run(variable tensor indices)` returns their values."""
    return run([t.variable for t in metadata.read(graph).trainables])


def reference_run(graph: ir.Graph, inputs: list):
    def run(indices):
        executor = Executor(graph)
        for step in inputs:
            executor.invoke(step)
        tensors = graph.referenced_tensors()
        return [executor.value(tensors[i]) for i in indices]
    return run


def tflm_run(data: bytes, graph: ir.Graph, inputs: list):
    def run(indices):
        tensors = graph.referenced_tensors()
        with TflmSession(data, preserve_all_tensors=True) as session:
            for step in inputs:
                session.invoke(step)
            return [session.tensor(i).reshape(tensors[i].shape) for i in indices]
    return run


def is_block(op: ir.Op) -> bool:
    return op.kind == FUSED and len(op.inputs) > BLOCK_INPUT + 1 and op.inputs[BLOCK_INPUT + 1] is not None


def replaced_kinds(op: ir.Op) -> dict:
    """{kind: how many ops of that kind the fused op `op` replaces}."""
    present = lambda slot: slot < len(op.inputs) and op.inputs[slot] is not None  # noqa: E731
    block = is_block(op)
    return {"TFLT_DEPTHWISE_INPUT_GRAD": 1,
            "TFLT_CONV_INPUT_GRAD": (len(op.outputs) == 2) + block,
            "TFLT_CONV_GRAD_UPDATE": (present(11) or present(13)) + (block and (present(20) or present(22)))}


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("scheme, rounding", [(full_update, "nearest"), (split_update, "stochastic")],
                         ids=["full-nearest", "split-stochastic"])
def test_fused_op_replaces_three_and_trains_identically(small_model, scheme, rounding):
    data, on = convert(small_model, scheme, rounding=rounding)
    _, off = convert(small_model, scheme, rounding=rounding, fuse_gradients=False)
    fused = [op for op in on.ops if op.kind == FUSED]
    assert fused and any(map(is_block, fused)) and FUSED not in kinds(off)
    for kind in ("TFLT_DEPTHWISE_INPUT_GRAD", "TFLT_CONV_INPUT_GRAD", "TFLT_CONV_GRAD_UPDATE"):
        assert kinds(on).count(kind) == kinds(off).count(kind) - sum(replaced_kinds(op)[kind] for op in fused)
    assert memory.estimate(on).arena_bytes < memory.estimate(off).arena_bytes
    inputs = steps(on)
    expected = trained_variables(off, reference_run(off, inputs))
    assert_same(trained_variables(on, reference_run(on, inputs)), expected)
    assert_same(trained_variables(on, tflm_run(data, on, inputs)), expected)


def test_fused_ops_of_a_separable_chain_share_no_op():
    """dw → 1×1 → dw → 1×1: the fused ops may not both absorb the 1×1 layer between them (each
    tensor is still produced before it is read), and training is unchanged."""
    model = separable_model()
    data, on = convert(model, rounding="stochastic")
    _, off = convert(model, rounding="stochastic", fuse_gradients=False)
    unfused = ir.load(model)
    pipeline.convert(unfused, full_update(unfused), pipeline.ConvertOptions(fuse_gradients=False, recompute=False))
    blocks, parts = fused_grads._candidates(unfused.ops, unfused.outputs)
    assert len(fused_grads._compatible(blocks, parts)) < len(blocks)  # some blocks and parts overlap
    made = set()
    for op in on.ops:
        assert all(t is None or t.is_constant or t.is_variable or id(t) in made or t in on.inputs
                   for t in op.inputs), op
        made.update(id(t) for t in op.outputs)
    assert kinds(on).count(FUSED) >= 2
    inputs = steps(on)
    expected = trained_variables(off, reference_run(off, inputs))
    assert_same(trained_variables(on, reference_run(on, inputs)), expected)
    assert_same(trained_variables(on, tflm_run(data, on, inputs)), expected)
    assert abs(memory.estimate(on).arena_bytes - measure.measure(data)["measured_arena_bytes"]) <= 16


def test_conventional_schedule_is_not_fused(small_model):
    _, graph = convert(small_model, reorder=False)
    assert FUSED not in kinds(graph)


def test_a_gradient_something_else_reads_is_not_fused(small_model):
    graph = ir.load(small_model)
    pipeline.convert(graph, full_update(graph), pipeline.ConvertOptions(fuse_gradients=False, recompute=False))
    ops = graph.ops
    _, found = fused_grads._candidates(ops, graph.outputs)
    assert found
    first = min(found)
    g = ops[first].outputs[0]
    extra = ir.Op("ADD", [g, g], [ir.Tensor("sum", g.shape, np.float32)], role="backward")
    for level in (0, 1):
        assert first not in fused_grads._candidates(ops + [extra], graph.outputs)[level]
        assert first not in fused_grads._candidates(ops, graph.outputs + [g])[level]


def test_a_block_whose_depthwise_gradient_something_else_reads_is_fused_without_the_projection(small_model):
    """Block mode needs the depthwise output gradient read only by the depthwise input gradient and
    the depthwise update; otherwise the depthwise → pointwise part alone is still a candidate."""
    graph = ir.load(small_model)
    pipeline.convert(graph, full_update(graph), pipeline.ConvertOptions(fuse_gradients=False, recompute=False))
    ops = graph.ops
    blocks, parts = fused_grads._candidates(ops, graph.outputs)
    assert blocks and set(blocks) <= set(parts)
    first = min(blocks)
    replaced, fused = blocks[first]
    assert [ops[j].kind for j in replaced].count("TFLT_CONV_INPUT_GRAD") == 2 and is_block(fused)
    dy = ops[first].inputs[1]
    extra = ir.Op("ADD", [dy, dy], [ir.Tensor("sum", dy.shape, np.float32)], role="backward")
    for graph_ops, outputs in ((ops + [extra], graph.outputs), (ops, graph.outputs + [dy])):
        blocks, parts = fused_grads._candidates(graph_ops, outputs)
        assert first not in blocks and first in parts


def test_an_update_in_between_that_the_moved_ops_read_blocks_fusion(small_model):
    """The fused op runs where the depthwise input gradient did: an update between it and the ops it
    absorbs may not write what they read."""
    graph = ir.load(small_model)
    pipeline.convert(graph, full_update(graph), pipeline.ConvertOptions(fuse_gradients=False, recompute=False))
    ops = graph.ops
    first, (replaced, _) = next(iter(fused_grads._candidates(ops, graph.outputs)[1].items()))
    update = ops[replaced[-1]]
    assert update.kind == "TFLT_CONV_GRAD_UPDATE"
    clash = ir.Op("TFLT_SGD_UPDATE", [None] * 4 + [update.inputs[6]], [], role="update")
    assert not fused_grads._movable(ops[:first + 1] + [clash] + ops[first + 1:], [first] + [j + 1 for j in replaced[1:]])


def test_cli_no_fused_gradients(small_model, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(small_model)
    scheme = tmp_path / "s.json"
    scheme.write_text(json.dumps(full_update(ir.load(small_model))))
    outputs = {}
    for flag in ((), ("--no-fused-gradients",)):
        out = tmp_path / f"out{len(flag)}.tflite"
        done = run_cli("convert", str(model), "--sparse-scheme", str(scheme), "-o", str(out), *flag)
        assert done.returncode == 0, done.stderr
        outputs[flag] = kinds(ir.load_file(str(out)))
    assert FUSED in outputs[()] and FUSED not in outputs[("--no-fused-gradients",)]


@pytest.mark.parametrize("scheme", ["mcunet-5fps_148kb", "mcunet-5fps_49kb"])
def test_mcunet_scheme_trains_identically_and_is_measured_as_estimated(scheme):
    from tflm_train.importer.mcunet import import_mcunet
    model = ir.emit(import_mcunet(shared_path("models", "tiny-training", "mcunet-5fps.pkl"), num_classes=10))
    with open(os.path.join(REPO, "examples", "paper_schemes", f"{scheme}.json")) as f:
        source = json.load(f)
    data, on = convert(model, source)
    off_data, off = convert(model, source, fuse_gradients=False)
    assert sum(map(is_block, on.ops)) >= 3
    inputs = steps(on)
    expected = trained_variables(off, tflm_run(off_data, off, inputs))
    assert_same(trained_variables(on, tflm_run(data, on, inputs)), expected)
    measured = measure.measure(data)
    assert measured["measured_arena_bytes"] < measure.measure(off_data)["measured_arena_bytes"] - 20_000
    assert abs(memory.estimate(on).arena_bytes - measured["measured_arena_bytes"]) <= 16
