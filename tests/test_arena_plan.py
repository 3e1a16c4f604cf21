"""The arena plan a converted model carries (converter/memory.py plan_arena): offline offsets that TFLM's
allocator follows instead of its own greedy placement, so their correctness rests on our tensor
lifetimes. Checked structurally on every published paper scheme, and by running a model whose plan
differs from TFLM's own in the stock interpreter against the same model with the plan set aside."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import REPO, shared_path
from tflm_train import ir, measure
from tflm_train.converter import memory, pipeline
from tflm_train.importer import import_mcunet
from tflm_train.tflm_runner import TflmSession

SCHEMES = os.path.join(REPO, "examples", "paper_schemes")


def converted(model: str, scheme: str) -> ir.Graph:
    graph = import_mcunet(shared_path("models", "tiny-training", f"{model}.pkl"), num_classes=10)
    with open(os.path.join(SCHEMES, f"{scheme}.json")) as f:
        pipeline.convert(graph, json.load(f))
    return ir.load(ir.emit(graph))  # as TFLM sees it


def overlaps(graph: ir.Graph) -> list:
    """Pairs of planned tensors live at the same op whose bytes overlap, by name."""
    buffers = memory.lifetimes(graph)
    offsets, _ = memory.greedy_offsets(buffers)
    found = []
    for i, a in enumerate(buffers):
        for j in range(i):
            b = buffers[j]
            if a.first <= b.last and b.first <= a.last and \
                    offsets[i] < offsets[j] + b.size and offsets[j] < offsets[i] + a.size:
                found.append({a.tensor.name, b.tensor.name})
    return found


def in_place_pairs(graph: ir.Graph) -> list:
    return [{op.inputs[0].name, op.outputs[0].name} for op in graph.ops if op.kind == "TFLT_CONV_CHAIN"]


@pytest.mark.parametrize("scheme", sorted(f[:-5] for f in os.listdir(SCHEMES) if f.endswith(".json")))
def test_only_a_chain_and_its_input_share_bytes(scheme):
    graph = converted(scheme.split("_")[0], scheme)
    assert graph.arena_offsets
    pairs = in_place_pairs(graph)
    assert all(pair in pairs for pair in overlaps(graph))
    # A plan for every tensor only where it packs tighter than TFLM's order (in-place pairs kept).
    planned = memory.estimate(graph).planned_bytes
    tflm_order = memory.estimate(ir.Graph(graph.ops, graph.inputs, graph.outputs, graph.tensors)).planned_bytes
    if len(graph.arena_offsets) == len(memory.lifetimes(graph)):
        assert planned < tflm_order
    else:
        assert graph.arena_offsets == memory.in_place_offsets(graph)
        assert planned == tflm_order


def test_a_model_planned_tighter_than_tflm_trains_like_it():
    """MCUNet with the 99 KB scheme: TFLM's own placement leaves a 5 KB gap, our plan none. Two training
    steps and an inference give the same outputs with the plan as with every tensor apart (TFLM's linear
    planner), and TFLM's planned head is the plan's."""
    graph = converted("mcunet-5fps", "mcunet-5fps_99kb")
    buffers = memory.lifetimes(graph)
    assert len(graph.arena_offsets) == len(buffers)  # every planned tensor placed by the model
    estimate = memory.estimate(graph)
    tflm_order = memory.estimate(ir.Graph(graph.ops, graph.inputs, graph.outputs, graph.tensors))
    assert estimate.planned_bytes < tflm_order.planned_bytes
    data = ir.emit(graph)
    rng = np.random.default_rng(0)
    image = graph.inputs[0]
    steps = [[rng.integers(-128, 128, image.shape, dtype=np.int8), np.array([label], np.int32),
              np.array([lr], np.float32)] for label, lr in ((3, 0.05), (7, 0.5), (-1, 0.0))]
    results = []
    for preserve in (False, True):
        with TflmSession(data, preserve_all_tensors=preserve) as session:
            results.append([session.invoke(step) for step in steps])
    for planned, apart in zip(*results):
        for a, b in zip(planned, apart):
            assert a.tobytes() == b.tobytes()
    assert measure.measure(data)["measured_head_bytes"] == estimate.planned_bytes
