"""Model IO: load → emit without edits runs bit-identically in the stock TFLM interpreter."""
import numpy as np
import pytest

from conftest import shared_path
from tflm_train import ir
from tflm_train.errors import UserError
from tflm_train.tflm_runner import TflmSession


def random_inputs(graph, rng):
    out = []
    for t in graph.inputs:
        if t.dtype == np.float32:
            out.append(rng.random(t.shape, dtype=np.float32))
        else:
            info = np.iinfo(t.dtype)
            out.append(rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype))
    return out


@pytest.mark.parametrize("model", ["models/tflm/person_detect.tflite", "models/mlperf-tiny/visual_wake_words.tflite"])
def test_round_trip_runs_bit_identically(model):
    original = open(shared_path(*model.split("/")), "rb").read()
    graph = ir.load(original)
    emitted = ir.emit(graph)
    again = ir.emit(ir.load(emitted))
    assert again == emitted  # emission is deterministic and a fixed point
    rng = np.random.default_rng(0)
    with TflmSession(original) as a, TflmSession(emitted) as b:
        for _ in range(3):
            inputs = random_inputs(graph, rng)
            for x, y in zip(a.invoke(inputs), b.invoke(inputs)):
                assert x.dtype == y.dtype and np.array_equal(x, y)


def test_buffers_are_aligned():
    graph = ir.load(open(shared_path("models", "tflm", "person_detect.tflite"), "rb").read())
    data = ir.emit(graph)
    from tflite_micro.tensorflow.lite.python import schema_py_generated as schema
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            assert buf.DataAsNumpy().ctypes.data % ir.BUFFER_ALIGNMENT == np.frombuffer(data, np.uint8).ctypes.data % ir.BUFFER_ALIGNMENT


@pytest.mark.parametrize("payload,message", [
    (b"", "not a .tflite"), (b"\x00" * 64, "not a .tflite"), (b"1234TFL3" + b"\xff" * 40, "corrupt"),
])
def test_bad_files(payload, message):
    with pytest.raises(UserError, match=message):
        ir.load(payload)


def test_offline_plan_round_trips_and_is_checked():
    """Head offsets travel as TFLM's OfflineMemoryAllocation metadata, one int32 per tensor (-1 where
    TFLM's planner places it); a count that does not match the tensors is a corrupt file."""
    graph = ir.load(open(shared_path("models", "tflm", "person_detect.tflite"), "rb").read())
    assert graph.arena_offsets == {}
    first, second = graph.ops[0].inputs[0], graph.ops[0].outputs[0]
    graph.arena_offsets = {id(first): 0, id(second): 16}
    data = ir.emit(graph)
    again = ir.load(data)
    names = {id(t): t.name for t in again.tensors}
    assert {names[k]: v for k, v in again.arena_offsets.items()} == {first.name: 0, second.name: 16}
    assert ir.OFFLINE_PLAN_METADATA not in again.metadata and ir.emit(again) == data

    hidden = ir.load(ir.without_offline_plan(data))
    assert hidden.arena_offsets == {} and ir.OFFLINE_PLAN_METADATA.lower() in hidden.metadata

    graph.arena_offsets = {}
    graph.metadata[ir.OFFLINE_PLAN_METADATA] = np.asarray([1, 0, 3, -1, -1, -1], "<i4").tobytes()
    with pytest.raises(UserError, match="OfflineMemoryAllocation metadata does not give one offset per tensor"):
        ir.load(ir.emit(graph))
