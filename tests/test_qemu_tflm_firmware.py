"""tools/qemu_tflm_firmware.py: the VWW example's device side (examples/vww/common) in the stock TFLM
MicroInterpreter on an emulated Cortex-M4, against the host's TFLM with our kernels.

The emulator runs need a tflite-micro checkout, which CI does not have: set TFLM_SRC to one at commit
90b983c2b and TFLM_INCLUDES to its flatbuffers/include, gemmlowp and ruy header directories
(os.pathsep-separated; default: TFLM's Makefile download directory). The transcript parsing and the
comparison run everywhere."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from micro_build import load_tool

tool = load_tool("qemu_tflm_firmware")
TFLM_SRC = os.environ.get("TFLM_SRC")
TFLM_INCLUDES = [Path(p) for p in os.environ.get("TFLM_INCLUDES", "").split(os.pathsep) if p]


# ---------------------------------------------------------------- transcript and comparison (no emulator)

def _commands():
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    return [tool.Command("rate", learning_rate=0.05), tool.Command("train", 1, pixels),
            tool.Command("infer", pixels=pixels), tool.Command("state")]


TRANSCRIPT = """ready
arena_used_bytes 5000
learning_rate 0.050000
arena_used_bytes 5000
instructions 120
loss 1.386294
arena_used_bytes 5000
instructions 90000
scores -128 127
arena_used_bytes 5000
instructions 40000
var 3 bias 0a0bff00
var 7 weight;x 80
arena_used_bytes 5000
instructions 3000
"""
EXPECTED = [0.05, 1.3862944, np.array([-128, 127], np.int8), {3: bytes([10, 11, 255, 0]), 7: b"\x80"}]


def test_transcript_parses_into_one_reply_per_command():
    ready_arena, replies = tool.parse_transcript(TRANSCRIPT, 4)
    assert ready_arena == 5000
    assert [r.instructions for r in replies] == [120, 90000, 40000, 3000]
    assert replies[1].lines == ["loss 1.386294"] and replies[3].arena_used_bytes == 5000


def test_matching_replies_have_no_problems():
    _, replies = tool.parse_transcript(TRANSCRIPT, 4)
    assert tool.compare(_commands(), replies, EXPECTED) == []


@pytest.mark.parametrize("index, wrong, reported", [
    (1, 1.3863, "loss"),
    (2, np.array([-128, 126], np.int8), "scores"),
    (3, {3: bytes([10, 11, 255, 1]), 7: b"\x80"}, "variable tensor 3 differs in 1 of 4 bytes"),
    (3, {3: bytes([10, 11, 255, 0])}, "device variables [3, 7], host [3]"),
])
def test_a_disagreement_is_reported(index, wrong, reported):
    _, replies = tool.parse_transcript(TRANSCRIPT, 4)
    expected = list(EXPECTED)
    expected[index] = wrong
    problems = tool.compare(_commands(), replies, expected)
    assert len(problems) == 1 and reported in problems[0], problems


def test_a_missing_reply_is_an_error():
    with pytest.raises(ValueError, match="3 replies for 4 commands"):
        tool.parse_transcript(TRANSCRIPT.rsplit("var 3", 1)[0], 4)


def test_device_errors_are_reported():
    _, replies = tool.parse_transcript(TRANSCRIPT.replace("loss 1.386294", "error: Invoke failed"), 4)
    assert tool.compare(_commands(), replies, EXPECTED) == ["command 1 (train): error: Invoke failed"]


def test_commands_encode_the_serial_protocol():
    rate, train, infer, state = _commands()
    assert rate.encode() == b"L" + np.float32(0.05).tobytes()
    assert train.encode() == b"T\x01" + bytes(range(12)) and infer.encode() == b"I" + bytes(range(12))
    assert state.encode() == b"S"


@pytest.mark.parametrize("kind, method", [
    ("CONV_2D", "AddConv2D"), ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"), ("ADD", "AddAdd"),
    ("AVERAGE_POOL_2D", "AddAveragePool2D"), ("FULLY_CONNECTED", "AddFullyConnected"),
    ("BATCH_TO_SPACE_ND", "AddBatchToSpaceNd"), ("L2_NORMALIZATION", "AddL2Normalization"),
])
def test_resolver_method_names_follow_tflm(kind, method):
    assert tool.resolver_method(kind) == method


def test_the_firmware_registers_exactly_the_models_builtins():
    import tf_models
    from tflm_train import ir
    kinds = tool.builtin_kinds(ir.load(tf_models.mobilenet_like(residual=True, pool="avgpool", size=12)))
    assert "ADD" in kinds and len(kinds) == len(set(kinds)) and not any(k.startswith("TFLT_") for k in kinds)
    header = tool.ops_header(kinds)
    assert f"kModelBuiltinOps = {len(kinds)};" in header
    assert [line.strip() for line in header.splitlines() if line.strip().startswith("resolver.Add")] == \
        [f"resolver.{tool.resolver_method(k)}()," for k in kinds]


def test_outcome_arena_is_the_largest_reported_and_other_ram_excludes_the_arena():
    _, replies = tool.parse_transcript(TRANSCRIPT.replace("arena_used_bytes 5000\ninstructions 90000",
                                                          "arena_used_bytes 6000\ninstructions 90000"), 4)
    outcome = tool.Outcome("cortex-m7", _commands(), replies, [], 5000, 300_000, "", arena_bytes=250_000)
    assert outcome.arena_used_bytes == 6000 and outcome.other_ram_bytes == 50_000


# ---------------------------------------------------------------- the emulator run (needs TFLM sources)

def _small_training_model(reorder: bool) -> bytes:
    import tf_models
    from tflm_train import ir
    from tflm_train.converter import pipeline
    graph = ir.load(tf_models.mobilenet_like(pool="avgpool", size=12))
    convs = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    scheme = {"bias": "all", "weights": [{"layer": convs[0], "ratio": 0.5}, {"layer": convs[1], "ratio": 1}],
              "classifier": True}
    pipeline.convert(graph, scheme, pipeline.ConvertOptions(reorder=reorder, rounding="stochastic"))
    return ir.emit(graph)


@pytest.mark.skipif(TFLM_SRC is None, reason="TFLM_SRC (a tflite-micro checkout at 90b983c2b) not set")
@pytest.mark.skipif(tool.qemu_firmware.tools_missing() is not None,
                    reason=f"{tool.qemu_firmware.tools_missing()} not installed")
@pytest.mark.parametrize("reorder", [True, False])
def test_training_steps_in_tflm_on_emulated_cortex_m4_match_the_host(reorder, tmp_path):
    outcome = tool.check(_small_training_model(reorder), "cortex-m4", Path(TFLM_SRC), TFLM_INCLUDES, tmp_path)
    assert outcome.passed, tool.format_outcome(outcome) + "\n" + outcome.output[-3000:]
    assert [c.kind for c in outcome.commands] == ["rate", "train", "train", "train", "infer", "state"]
    assert all(r.instructions > 0 for r in outcome.replies[1:5])
    # compared byte for byte: the trained weights and biases and TRAIN_INIT's step state
    assert len([line for line in outcome.replies[-1].lines if line.startswith("var ")]) >= 4
    assert 0 < outcome.ready_arena_bytes <= outcome.replies[1].arena_used_bytes < tool.DEFAULT_ARENA_BYTES
