"""TFLT_CONV_CHAIN: its numpy reference against the unfused layers (TFLM's stock kernels as
the reference executor has them, and our flash-parameter ops), and the converter pass that
fuses chains. The C++ kernel: tests/test_micro_core.py, test_micro_kernels.py and, in the
real TFLM interpreter, test_micro_kernels_tflm.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from chain_cases import CHAINS, DEPTHWISE, POINTWISE, PROJECT, STEM, Layer, random_chain, random_layers
from depthwise_cases import varied
from tflm_train import ir
from tflm_train.converter import lowering, memory
from tflm_train.errors import UserError
from tflm_train.kernels_grad.conv_chain import scratch_bytes
from tflm_train.reference import KERNELS, Executor
from tflm_train.schema.training_ops_generated import ConvChainOptions, ConvChainStage

def run(ops, x, y, image) -> np.ndarray:
    return Executor(ir.Graph(ops, [x], [y], [])).invoke([image])[0]


def assert_chain_is_the_layers(chain, rng, images=2):
    graph = chain.graph()
    lowered = chain.lowered(graph)
    op = lowering.conv_chain_op(graph, lowered)
    assert op.inputs[0] is chain.x and op.outputs[0] is chain.y and len(op.inputs) == 1 + 4 * len(chain.convs)
    for _ in range(images):
        image = chain.image(rng)
        expected = run(chain.ops, chain.x, chain.y, image)
        np.testing.assert_array_equal(run(lowered, chain.x, chain.y, image), expected)
        np.testing.assert_array_equal(run([op], chain.x, chain.y, image), expected)
        assert varied(expected)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chain_equals_the_stock_and_the_lowered_layers(name):
    rng = np.random.default_rng(sorted(CHAINS).index(name))
    layers, size = CHAINS[name]
    assert_chain_is_the_layers(random_chain(rng, layers, *size), rng)


@pytest.mark.parametrize("seed", range(16))
def test_random_chains_equal_their_layers(seed):
    rng = np.random.default_rng(50 + seed)
    size = [int(s) for s in rng.integers(12, 24, size=2)]
    layers = random_layers(rng, int(rng.integers(2, 5)), *size)
    assert_chain_is_the_layers(random_chain(rng, layers, *size, int(rng.integers(1, 5))), rng, images=1)


def test_scratch_holds_the_rows_each_consumer_reads():
    """8x8x3 → stem 3x3/2 (4x4xO) → depthwise 3x3 → pointwise: 3 rows of the stem's output, then 1
    of the depthwise's; a 5-tall window on a 2-row image needs only those 2 rows."""
    chain = random_chain(np.random.default_rng(0), [STEM, DEPTHWISE, POINTWISE], 8, 8, 3)
    graph = chain.graph()
    op = lowering.conv_chain_op(graph, chain.lowered(graph))
    o = chain.convs[0].outputs[0].shape[-1]
    assert op.outputs[1].shape == (3 * 4 * o + 1 * 4 * o,) and op.outputs[1].dtype == np.int8
    stages = [ConvChainStage(output_height=2, output_width=6, output_channels=4),
              ConvChainStage(depthwise=True, dilation_h=2, output_height=2, output_width=6, output_channels=4)]
    assert scratch_bytes(stages, [1, 3]) == 2 * 6 * 4


def test_reference_kernel_rejects_what_the_c_kernel_rejects():
    chain = random_chain(np.random.default_rng(1), [STEM, DEPTHWISE, PROJECT], 9, 9, 3)
    graph = chain.graph()
    op = lowering.conv_chain_op(graph, chain.lowered(graph))
    args = [chain.image(np.random.default_rng(0))] + [t if t is None else t.data for t in op.inputs[1:]]
    KERNELS["TFLT_CONV_CHAIN"](op, args)
    with pytest.raises(UserError, match="3 stages take 13 inputs and give 2 outputs, got 12"):
        KERNELS["TFLT_CONV_CHAIN"](op, args[:-1])
    bad = list(args)
    bad[5] = bad[5][..., :-1]  # the depthwise filter loses a channel
    with pytest.raises(UserError, match="stage 1's w .* does not fit"):
        KERNELS["TFLT_CONV_CHAIN"](op, bad)
    op.outputs[1] = ir.Tensor("small", (op.outputs[1].size - 1,), np.int8)
    with pytest.raises(UserError, match=f"scratch must be int8 \\[{op.outputs[1].size + 1}\\]"):
        KERNELS["TFLT_CONV_CHAIN"](op, args)
    op.custom_options = ConvChainOptions().to_bytes()
    with pytest.raises(UserError, match="0 stages take 1 inputs"):
        KERNELS["TFLT_CONV_CHAIN"](op, args)


# ---------------------------------------------------------------- the converter pass

def fused(chain, graph=None, outputs=None) -> list:
    graph = graph or chain.graph()
    if outputs is not None:
        graph.outputs = outputs
    return lowering.lower_forward(graph, list(chain.ops))


# MCUNet's first layers with its widths: 16-channel stem, 8-channel block output, 48-channel expansion.
WIDE_HEAD = [Layer(strides=(2, 2), channels=16), DEPTHWISE, Layer(kernel=(1, 1), channels=8, activation=0),
             Layer(kernel=(1, 1), channels=48), Layer(depthwise=True, strides=(2, 2), padding="PAD"),
             Layer(kernel=(1, 1), channels=8, activation=0)]


def test_pass_fuses_a_frozen_run_into_chains():
    chain = random_chain(np.random.default_rng(2), WIDE_HEAD, 24, 24, 3)
    ops = fused(chain)
    assert {op.kind for op in ops} == {"TFLT_CONV_CHAIN"} and len(ops) < len(WIDE_HEAD)
    stages = [s for op in ops for s in ConvChainOptions.from_bytes(op.custom_options).stages]
    assert [s.depthwise for s in stages] == [False, True, False, False, True, False]
    assert all(op.role == "forward" for op in ops) and ops[-1].outputs[0] is chain.y
    assert all(b.inputs[0] is a.outputs[0] for a, b in zip(ops, ops[1:]))


def test_pass_cuts_a_chain_at_a_narrow_activation():
    """The whole run would hold the image beside all its windows, the 48-channel expansion's among
    them; cut at the 8-channel block output, the first part's small windows sit beside the image,
    the second part's beside that output, which it writes over."""
    chain = random_chain(np.random.default_rng(2), WIDE_HEAD, 24, 24, 3)
    graph = chain.graph()
    ops = fused(chain, graph)
    narrow = chain.convs[2].outputs[0]
    assert [op.kind for op in ops] == ["TFLT_CONV_CHAIN"] * 2
    assert ops[0].inputs[0] is chain.x and ops[0].outputs[0] is narrow
    assert ops[1].inputs[0] is narrow and ops[1].outputs[0] is chain.y
    graph.ops = ops
    assert set(memory.in_place_offsets(graph)) == {id(chain.x), id(narrow), id(chain.y)}


def test_pass_ends_runs_at_what_else_reads_an_intermediate_and_at_trainable_layers():
    chain = random_chain(np.random.default_rng(3), WIDE_HEAD, 24, 24, 3)
    middle = chain.convs[2].outputs[0]
    ops = fused(chain, outputs=[middle, chain.y])
    assert [op.kind for op in ops] == ["TFLT_CONV_CHAIN", "TFLT_CONV_CHAIN"]
    assert ops[0].outputs[0] is middle and ops[1].inputs[0] is middle

    last = chain.convs[-1]
    last.inputs[1] = ir.Tensor("w_var", last.inputs[1].shape, np.int8, quant=last.inputs[1].quant, is_variable=True)
    ops = fused(chain)
    assert {op.kind for op in ops[:-1]} == {"TFLT_CONV_CHAIN"} and ops[-1] is last
    assert ops[-2].outputs[0] is last.inputs[0]


def test_pass_keeps_chains_that_would_raise_the_peak(monkeypatch):
    """A 1-channel bottleneck between wide activations: the chain would hold x and y at once where y
    cannot be written over x."""
    squeeze = [Layer(kernel=(1, 1), channels=1), Layer(kernel=(1, 1), channels=16)]
    chain = random_chain(np.random.default_rng(4), squeeze, 16, 16, 16)
    with monkeypatch.context() as patch:
        patch.setattr(memory, "in_place_offsets", lambda graph: {})
        assert "TFLT_CONV_CHAIN" not in [op.kind for op in fused(chain)]
    # Where x dies in the chain, y is written over it: the chain no longer raises the peak.
    graph = chain.graph()
    ops = fused(chain, graph)
    assert [op.kind for op in ops] == ["TFLT_CONV_CHAIN"]
    graph.ops = ops
    offsets = memory.in_place_offsets(graph)
    assert offsets == {id(chain.x): 0, id(chain.y): 0}  # 1x1 stride-1 layers: row r over x's row r
    graph = chain.graph()
    assert_chain_is_the_layers(chain, np.random.default_rng(4), images=1)  # fusing it would still be exact
    assert lowering.conv_chain_op(graph, chain.lowered(graph)).outputs[1].size == 16


def test_only_one_graph_input_roots_chains_written_in_place():
    """Graph inputs all live from the start, so two of them at one offset would collide: only the first
    input a chain can write over is placed."""
    chains = [random_chain(np.random.default_rng(seed), WIDE_HEAD, 24, 24, 3) for seed in (5, 6)]
    graphs = [chain.graph() for chain in chains]
    ops = [op for chain, graph in zip(chains, graphs) for op in fused(chain, graph)]
    graph = ir.Graph(ops, [chain.x for chain in chains], [chain.y for chain in chains],
                     [t for g in graphs for t in g.tensors])
    offsets = memory.in_place_offsets(graph)
    assert id(chains[0].x) in offsets and id(chains[0].y) in offsets
    assert not {id(chains[1].x), id(chains[1].y)} & set(offsets)
