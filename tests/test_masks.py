"""Packed activation masks: TFLT_ACTIVATION_MASK's numpy reference, the backward ops' packed `y`
(the same results as the int8 activation), and the converter pass that saves masks instead of
activations (tflm_train/converter/masks.py)."""
import collections
import os

import numpy as np
import pytest

from conftest import REPO, shared_path
import tf_models
from tflm_train import ir
from tflm_train.converter import masks, memory, metadata, pipeline
from tflm_train.errors import UserError
from tflm_train.kernels_grad import common, mask
from tflm_train.reference import Executor
from tflm_train.reference.registry import KERNELS
from tflm_train.schema.training_ops_generated import ActivationMaskOptions, ConvGradOptions, ConvUpdateOptions

F32 = np.float32


def direct_mask(y, act_min, act_max) -> np.ndarray:
    """The contract read literally: bit i % 8 of byte i // 8, one element at a time."""
    flat = np.asarray(y).reshape(-1)
    packed = np.zeros((flat.size + 7) // 8, np.uint8)
    for i, v in enumerate(flat):
        if act_min < int(v) < act_max:
            packed[i // 8] |= 1 << (i % 8)
    return packed


@pytest.mark.parametrize("shape", [(1, 5, 3, 7), (1, 16), (3,), (2, 1, 9)])
@pytest.mark.parametrize("act_min, act_max", [(-128, 127), (-20, 100), (4, 4), (-128, -127)])
def test_pack_follows_the_contract(shape, act_min, act_max):
    y = np.random.default_rng(sum(shape)).integers(-128, 128, size=shape).astype(np.int8)
    y.reshape(-1)[:2] = (act_min, act_max)  # the bounds themselves are masked
    packed = mask.pack_activation_mask(y, act_min=act_min, act_max=act_max)
    assert packed.dtype == np.uint8 and packed.shape == ((y.size + 7) // 8,)
    np.testing.assert_array_equal(packed, direct_mask(y, act_min, act_max))


def test_pack_rejects_what_the_kernel_rejects():
    for y in (np.zeros((1, 4), np.uint8), np.zeros((1, 0), np.int8)):
        with pytest.raises(UserError, match="non-empty int8"):
            mask.pack_activation_mask(y, act_min=0, act_max=127)


def test_packed_mask_must_have_ceil_n_over_8_bytes():
    dy = np.ones((1, 3, 3, 2), F32)  # 18 elements: 3 bytes
    y = np.zeros(dy.shape, np.int8)
    common.activation_mask(dy, mask.pack_activation_mask(y, act_min=-1, act_max=1), -1, 1)
    for size in (2, 4):
        with pytest.raises(UserError, match="has 3 bytes, got"):
            common.activation_mask(dy, np.zeros(size, np.uint8), -1, 1)


def custom_op(kind, options, outputs=()):
    return ir.Op(kind, [], [ir.Tensor(f"out{i}", shape, dtype) for i, (shape, dtype) in enumerate(outputs)],
                 custom_options=options.to_bytes(), custom=True)


def backward_cases(rng):
    """(kind, options, output specs, inputs, y's input index) of every op that masks with y:
    a 3x3 stride-2 conv (5 -> 4 channels, a split weight) and a depthwise conv (3 -> 6) on 7x7."""
    x = rng.integers(-128, 128, (1, 7, 7, 5)).astype(np.int8)
    y = rng.integers(-128, 128, (1, 4, 4, 4)).astype(np.int8)
    dy = rng.standard_normal(y.shape).astype(F32)
    w = rng.integers(-127, 128, (4, 3, 3, 5)).astype(np.int8)
    w_train = rng.integers(-127, 128, (4, 3, 3, 2)).astype(np.int8)
    scale = rng.uniform(0.002, 0.01, 4).astype(F32)
    window = dict(stride_h=2, stride_w=2, pad_top=1, pad_left=1, act_min=-30, act_max=90)
    grad = ConvGradOptions(**window, input_height=7, input_width=7, input_channels=5)
    update = ConvUpdateOptions(**window, x_zero_point=3, x_scale=0.02, weight_param_id=1, bias_param_id=2)
    label, lr, state = np.int32([1]), F32([0.5]), np.int32([1, 3])
    b_train = rng.integers(-3000, 3000, 4).astype(np.int32)
    qas = rng.uniform(100, 1000, 4).astype(F32)
    dw_y = rng.integers(-128, 128, (1, 4, 4, 6)).astype(np.int8)
    dw_dy = rng.standard_normal(dw_y.shape).astype(F32)
    dw_grad = ConvGradOptions(**window, input_height=7, input_width=7, input_channels=3, depth_multiplier=2)
    return [
        ("TFLT_CONV_INPUT_GRAD", grad, [((1, 7, 7, 5), F32)], [label, dy, y, w, w_train, scale], 2),
        ("TFLT_DEPTHWISE_INPUT_GRAD", dw_grad, [((1, 7, 7, 3), F32)],
         [label, dw_dy, dw_y, rng.integers(-127, 128, (1, 3, 3, 6)).astype(np.int8), rng.uniform(0.002, 0.01, 6)
          .astype(F32)], 2),
        ("TFLT_CONV_WEIGHT_GRAD", update, [(w_train.shape, F32)], [label, dy, y, x], 2),
        ("TFLT_BIAS_GRAD", update, [((4,), F32)], [label, dy, y], 2),
        ("TFLT_CONV_GRAD_UPDATE", update, [], [label, lr, state, dy, y, x, w_train, qas, b_train, qas], 4),
    ]


def run_reference(kind, options, outputs, inputs) -> list:
    """The kernel's outputs, then its inputs after the call (the update changes its variables in place)."""
    inputs = [None if v is None else np.copy(v) for v in inputs]
    results = KERNELS[kind](custom_op(kind, options, outputs), inputs)
    return list(results) + inputs


@pytest.mark.parametrize("index", range(5))
def test_reference_backward_ops_give_the_same_results_with_a_packed_mask(index):
    kind, options, outputs, inputs, y_index = backward_cases(np.random.default_rng(index))[index]
    y = inputs[y_index]
    packed_inputs = list(inputs)
    packed_inputs[y_index], = KERNELS["TFLT_ACTIVATION_MASK"](
        custom_op("TFLT_ACTIVATION_MASK", ActivationMaskOptions(act_min=options.act_min, act_max=options.act_max),
                  [((((y.size + 7) // 8),), np.uint8)]), [y])
    with_y, with_packed = run_reference(kind, options, outputs, inputs), run_reference(kind, options, outputs,
                                                                                     packed_inputs)
    del with_y[len(outputs) + y_index], with_packed[len(outputs) + y_index]
    for a, b in zip(with_packed, with_y):
        np.testing.assert_array_equal(a, b)
    # The mask matters: without it the results differ.
    unmasked = list(inputs)
    unmasked[y_index] = None
    plain = run_reference(kind, options, outputs, unmasked)
    del plain[len(outputs) + y_index]
    assert any(not np.array_equal(a, b) for a, b in zip(plain, with_y))


# ---------------------------------------------------------------- the converter pass

@pytest.fixture(scope="module")
def small_model():
    return tf_models.mobilenet_like(residual=True, pad=True)


def convert(model: bytes, scheme, **options) -> ir.Graph:
    """Without recomputation, which may read a packed activation again in the backward (for less arena)."""
    graph = ir.load(model)
    pipeline.convert(graph, scheme, pipeline.ConvertOptions(recompute=False, **options))
    graph = ir.load(ir.emit(graph))
    metadata.read(graph)
    return graph


def kinds(graph) -> collections.Counter:
    return collections.Counter(op.kind for op in graph.ops)


# dw_y, pw_y and (block mode) proj_y of TFLT_DEPTHWISE_POINTWISE_GRAD, which replaces masking ops after
# the pass.
FUSED_Y_SLOTS = (4, 7, 15)


def mask_readers(graph):
    """(op, y) of every y input of a masking op."""
    for op in graph.ops:
        slots = FUSED_Y_SLOTS if op.kind == "TFLT_DEPTHWISE_POINTWISE_GRAD" else (masks.MASK_SLOTS.get(op.kind),)
        for slot in slots:
            if slot is not None and slot < len(op.inputs) and op.inputs[slot] is not None:
                yield op, op.inputs[slot]


def assert_masks_well_formed(graph):
    """Each mask op right after its activation's producer; packed masks feed only y slots, and a
    packed activation no longer reaches any backward op."""
    producers = {id(t): i for i, op in enumerate(graph.ops) for t in op.outputs}
    packed = {}
    for i, op in enumerate(graph.ops):
        if op.kind == "TFLT_ACTIVATION_MASK":
            y, bits = op.inputs[0], op.outputs[0]
            assert op.role == "forward" and producers[id(y)] == i - 1
            assert y.dtype == np.int8 and bits.dtype == np.uint8 and bits.shape == ((y.size + 7) // 8,)
            packed[id(bits)] = y
    for op in graph.ops:
        if op.role != "forward":
            assert not any(t is not None and id(t) in {id(y) for y in packed.values()} for t in op.inputs), op
    readers = [(op, y) for op, y in mask_readers(graph) if id(y) in packed]
    for bits in packed:
        assert sum(1 for op in graph.ops for t in op.inputs if t is not None and id(t) == bits) == \
               sum(1 for _, y in readers if id(y) == bits)
    return packed


def test_pass_packs_masks_not_values_and_lowers_the_estimate(small_model):
    graph = ir.load(small_model)
    convs = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    pointwise = convs[2]  # its input (the depthwise output) is needed as values by its weight update
    scheme = {"bias": "all", "weights": [{"layer": pointwise, "ratio": 1}], "classifier": True}
    on, off = convert(small_model, scheme), convert(small_model, scheme, activation_masks=False)

    packed = assert_masks_well_formed(on)
    assert len(packed) >= 2 and "TFLT_ACTIVATION_MASK" not in kinds(off)
    assert kinds(on) - kinds(off) == {"TFLT_ACTIVATION_MASK": len(packed)}
    depthwise_output = graph.ops[pointwise].inputs[0].name
    assert depthwise_output not in {y.name for y in packed.values()}
    assert any(op.kind == "TFLT_CONV_GRAD_UPDATE" and op.inputs[5] is not None and op.inputs[5].name == depthwise_output
               for op in on.ops)
    assert memory.estimate(on).arena_bytes < memory.estimate(off).arena_bytes

    # One training step of each in the reference executor: identical trained parameters.
    rng = np.random.default_rng(0)
    inputs = [rng.integers(-128, 128, on.inputs[0].shape, dtype=np.int8), np.int32([1]), F32([2.0])]
    results = []
    for graph in (on, off):
        executor = Executor(graph)
        executor.invoke(inputs)
        md = metadata.read(graph)
        tensors = graph.referenced_tensors()
        results.append([executor.value(tensors[t.variable]) for t in md.trainables])
        assert any((executor.value(tensors[t.variable]) != tensors[t.initial_value].data[..., :tensors[
            t.variable].shape[-1]]).any() for t in md.trainables)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_pass_packs_no_activation_a_backward_op_reads_as_values(small_model):
    """Every weight trained: each ReLU6 output is some weight update's input `x` except the first
    conv's (the PAD's input; the depthwise update reads the padded copy), so only that one is packed.
    Classifier only: no op masks with an activation."""
    graph = ir.load(small_model)
    convs = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    everything = {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in convs], "classifier": True}
    packed = assert_masks_well_formed(convert(small_model, everything))
    assert [y.name for y in packed.values()] == [graph.ops[convs[0]].outputs[0].name]
    assert "TFLT_ACTIVATION_MASK" not in kinds(convert(small_model, {"classifier": True}))


def test_pass_leaves_out_masks_that_do_not_lower_the_arena():
    """On a 6x6 image three ReLU6 outputs are only masks to the backward, but a mask op costs its node
    and op data for the whole run, more than packing these ~100-byte activations saves."""
    model = tf_models.mobilenet_like(size=6)
    scheme = {"bias": "last 4", "classifier": True}
    on, off = convert(model, scheme), convert(model, scheme, activation_masks=False)
    assert "TFLT_ACTIVATION_MASK" not in kinds(on)
    assert memory.estimate(on).arena_bytes == memory.estimate(off).arena_bytes


@pytest.mark.parametrize("scheme", ["mcunet-5fps_49kb", "mcunet-5fps_148kb"])
def test_mcunet_backward_keeps_masks_instead_of_activations(scheme):
    from tflm_train.converter.scheme import load_scheme_file
    from tflm_train.importer.mcunet import import_mcunet
    model = ir.emit(import_mcunet(shared_path("models", "tiny-training", "mcunet-5fps.pkl"), num_classes=10))
    source = load_scheme_file(os.path.join(REPO, "examples", "paper_schemes", f"{scheme}.json"))
    on, off = convert(model, source), convert(model, source, activation_masks=False)
    packed = assert_masks_well_formed(on)
    assert packed
    before, after = memory.estimate(off), memory.estimate(on)

    def backward_peak(graph, estimate):
        return max(estimate.timeline[i] for i, op in enumerate(graph.ops) if op.role != "forward")

    forward_peak = max(before.timeline[i] for i, op in enumerate(off.ops) if op.role == "forward")
    # The backward peak (141 KB at 49kb, the saved activations) falls to the forward's, which then
    # bounds the arena.
    assert backward_peak(off, before) > forward_peak + 10_000
    assert backward_peak(on, after) <= forward_peak
    assert after.planned_bytes < before.planned_bytes - 35_000
    assert after.arena_bytes < before.arena_bytes - 35_000
