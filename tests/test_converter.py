"""Converter: pruning, reordering, metadata, and clean errors on bad input."""
import collections
import json
import os

import pytest

from conftest import run_cli, shared_path
import tf_models
from tflm_train import ir
from tflm_train.converter import memory, metadata, pipeline
from tflm_train.errors import UserError


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "residual.tflite"
    path.write_bytes(tf_models.mobilenet_like(residual=True, pad=True))
    return str(path)


def convert(path, scheme, **options):
    graph = ir.load_file(path)
    pipeline.convert(graph, scheme, pipeline.ConvertOptions(**options))
    # Emit and reload: the counts below are of the model file a device would run.
    graph = ir.load(ir.emit(graph))
    metadata.read(graph)
    return graph


def roles(graph):
    return collections.Counter(op.role for op in graph.ops)


def kinds(graph, role=None):
    return collections.Counter(op.kind for op in graph.ops if role is None or op.role == role)


def layer_index(path, position):
    graph = ir.load_file(path)
    convs = [i for i, op in enumerate(graph.ops) if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    return convs[position]


def test_classifier_only_emits_only_the_classifier_update(small_model):
    g = convert(small_model, {"classifier": True}, lower_forward=False)
    assert roles(g) == {"init": 1, "forward": 10, "loss": 1, "update": 1}
    assert kinds(g, "update") == {"TFLT_CONV_GRAD_UPDATE": 1}


def test_bias_only_stops_backprop_at_the_earliest_bias(small_model):
    g = convert(small_model, {"bias": "last 3"})
    # FC input grad, MEAN grad, pw input grad; the dw below it needs no input gradient.
    assert kinds(g, "backward") == {"TFLT_CONV_INPUT_GRAD": 2, "TFLT_MEAN_GRAD": 1}
    assert kinds(g, "update") == {"TFLT_CONV_GRAD_UPDATE": 3}
    md = metadata.read(g)
    assert [t.kind for t in md.trainables] == [1, 1, 1]


def test_forward_lowering_keeps_narrow_convs_stock_and_folds_pads(small_model):
    scheme = {"bias": "last 2", "classifier": True}
    stock, lowered = convert(small_model, scheme, lower_forward=False), convert(small_model, scheme)
    # 8-12 channels: TFLM's 8 bytes per channel cost less than the flash kernel's op data...
    assert kinds(lowered, "forward")["CONV_2D"] == kinds(stock, "forward")["CONV_2D"]
    # ...but the depthwise conv behind the PAD absorbs it.
    assert kinds(stock, "forward")["PAD"] == 1 and "PAD" not in kinds(lowered)
    assert kinds(lowered, "forward")["TFLT_DEPTHWISE_CONV_2D"] >= 1
    assert memory.estimate(lowered).arena_bytes < memory.estimate(stock).arena_bytes


@pytest.mark.skipif(not shared_path("models/tiny-training/mcunet-5fps.pkl"), reason="needs ../shared (MCUNet)")
def test_forward_lowering_folds_pads_and_moves_requantisation_to_flash():
    from tflm_train.importer.mcunet import import_mcunet
    model = ir.emit(import_mcunet(shared_path("models/tiny-training/mcunet-5fps.pkl"), num_classes=10))
    scheme = {"bias": "last 4", "classifier": True}

    def converted(**options):
        graph = ir.load(model)
        pipeline.convert(graph, scheme, pipeline.ConvertOptions(**options))
        return graph

    stock, lowered = converted(lower_forward=False), converted()
    assert kinds(stock, "forward")["CONV_2D"] > 25 and kinds(lowered, "forward")["CONV_2D"] < 10
    assert kinds(stock, "forward")["DEPTHWISE_CONV_2D"] > 10 and kinds(lowered, "forward")["DEPTHWISE_CONV_2D"] < 5
    # Every PAD (the first conv's, the stride-2 depthwise convs') is folded.
    assert kinds(stock, "forward")["PAD"] >= 5 and "PAD" not in kinds(lowered)
    before, after = memory.estimate(stock), memory.estimate(lowered)
    assert after.overhead_bytes < before.overhead_bytes - 10_000
    assert after.planned_bytes <= before.planned_bytes


def test_sparse_scheme_reordered_and_conventional(small_model):
    pw2, pw4 = layer_index(small_model, 2), layer_index(small_model, 4)
    scheme = {"bias": "last 4", "weights": [{"layer": pw2, "ratio": 1}, {"layer": pw4, "ratio": 0.5}],
              "classifier": True}
    g = convert(small_model, scheme, lower_forward=False, activation_masks=False, recompute=False)
    assert kinds(g, "backward") == {"TFLT_CONV_INPUT_GRAD": 2, "TFLT_MEAN_GRAD": 1,
                                    "TFLT_DEPTHWISE_INPUT_GRAD": 1, "ADD": 1}
    assert kinds(g, "update") == {"TFLT_CONV_GRAD_UPDATE": 4}
    assert kinds(g, "forward")["TFLT_CONV_2D_SPLIT"] == 1
    split = next(op for op in g.ops if op.kind == "TFLT_CONV_2D_SPLIT")
    assert split.inputs[2].is_variable and split.inputs[2].shape == (12, 1, 1, 6)
    assert split.inputs[1].is_constant and split.inputs[1].shape == (12, 1, 1, 12)
    # Each update directly follows the backward op that produced its layer's input gradient (or the loss).
    order = [op.role for op in g.ops]
    assert order[0] == "init" and order.index("loss") == 11
    for i, op in enumerate(g.ops):
        if op.role == "update" and op.inputs[5] is not None:
            assert g.ops[i - 1].role in ("backward", "loss", "update")

    c = convert(small_model, scheme, reorder=False, recompute=False)
    assert kinds(c, "backward") == {"TFLT_CONV_INPUT_GRAD": 2, "TFLT_MEAN_GRAD": 1, "TFLT_DEPTHWISE_INPUT_GRAD": 1,
                                    "ADD": 1, "TFLT_CONV_WEIGHT_GRAD": 3, "TFLT_BIAS_GRAD": 4}
    assert kinds(c, "update") == {"TFLT_SGD_UPDATE": 7}
    assert [op.role for op in c.ops][-7:] == ["update"] * 7
    assert memory.estimate(g).arena_bytes < memory.estimate(c).arena_bytes


def test_training_io_and_metadata(small_model):
    g = convert(small_model, {"bias": "last 2", "classifier": True}, rounding="stochastic")
    md = metadata.read(g)
    tensors = g.referenced_tensors()
    assert [t.name for t in g.inputs][1:] == ["tflm_train/label", "tflm_train/learning_rate"]
    assert g.outputs[-1].name == "tflm_train/loss"
    assert tensors[md.label_input] is g.inputs[1] and tensors[md.loss_output] is g.outputs[-1]
    assert tensors[md.state].is_variable and tensors[md.state].shape == (2,)
    assert md.rounding == 1 and md.reordered and md.qas
    for t in md.trainables:
        var, init = tensors[t.variable], tensors[t.initial_value]
        assert var.is_variable and var.data is None and init.is_constant
        assert var.shape[:-1] == init.shape[:-1] and var.shape[-1] <= init.shape[-1]
    init_op = g.ops[0]
    assert init_op.kind == "TFLT_TRAIN_INIT" and len(init_op.inputs) == 2 + 2 * len(md.trainables)
    assert json.loads(md.scheme_json)["layers"]


def test_reference_scheme_keys(small_model):
    g = convert(small_model, {"n_bias_update": 3, "manual_weight_idx": [4, 3], "weight_update_ratio": [0.5, 0]})
    md = metadata.read(g)
    tensors = g.referenced_tensors()
    weights = [tensors[t.variable].shape for t in md.trainables if t.kind == 0]
    assert weights == [(12, 1, 1, 6), (4, 12)]  # pw at ratio 0.5, classifier in full


@pytest.mark.parametrize("model,scheme", [
    ("models/tflm/person_detect.tflite",
     {"bias": "last 10", "weights": [{"layer": 24, "ratio": 0.5}, {"layer": 26, "ratio": 0.25}], "classifier": True}),
    ("models/mlperf-tiny/visual_wake_words.tflite",
     {"bias": "last 10", "weights": [{"layer": 25, "ratio": 0.5}, {"layer": 27, "ratio": 0.25}], "classifier": True}),
])
def test_reordering_lowers_the_estimated_peak(model, scheme):
    path = shared_path(*model.split("/"))
    reordered = memory.estimate(convert(path, scheme))
    conventional = memory.estimate(convert(path, scheme, reorder=False))
    assert reordered.arena_bytes < conventional.arena_bytes
    assert max(reordered.timeline) < max(conventional.timeline)


# ---- bad input: one line on stderr, non-zero exit, no traceback, nothing written

def assert_clean_failure(result, out_path, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and lines[0].startswith("tflm-train: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert not os.path.exists(out_path)
    assert not [f for f in os.listdir(os.path.dirname(out_path)) if f.startswith(".tflm-train-")]


@pytest.fixture
def scheme_file(tmp_path):
    def write(obj, name="s.json"):
        p = tmp_path / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(p)
    return write


def test_float_model_is_rejected(tmp_path, scheme_file):
    src = tmp_path / "float.tflite"
    src.write_bytes(tf_models.float_model())
    out = str(tmp_path / "out.tflite")
    r = run_cli("convert", str(src), "--sparse-scheme", scheme_file({"classifier": True}), "-o", out)
    assert_clean_failure(r, out, "not int8-quantized")


def test_op_without_gradient_rule_is_named(tmp_path, scheme_file):
    src = tmp_path / "pool.tflite"
    src.write_bytes(tf_models.with_max_pool())
    out = str(tmp_path / "out.tflite")
    r = run_cli("convert", str(src), "--sparse-scheme", scheme_file({"bias": "all"}), "-o", out)
    assert_clean_failure(r, out, "no gradient rule for MAX_POOL_2D (op 1)")


@pytest.mark.parametrize("payload", [b"", b"garbage" * 10, "truncated"])
def test_truncated_or_garbage_file(tmp_path, scheme_file, small_model, payload):
    if payload == "truncated":
        payload = open(small_model, "rb").read()[:600]
    src = tmp_path / "bad.tflite"
    src.write_bytes(payload)
    out = str(tmp_path / "out.tflite")
    r = run_cli("convert", str(src), "--sparse-scheme", scheme_file({"classifier": True}), "-o", out)
    assert_clean_failure(r, out)


@pytest.mark.parametrize("scheme,message", [
    ({"bias": "last 3", "weights": [{"layer": "no_such_tensor", "ratio": 1}]}, "unknown layer"),
    ({"bias": "last 3", "weights": [{"layer": 99, "ratio": 1}]}, "unknown layer"),
    ({"bias": "last 3", "weights": [{"layer": "POS4", "ratio": 1.5}]}, "weights[0].ratio"),
    ({"bias": "last 3", "weights": [{"layer": "POS4", "ratio": 0}]}, "weights[0].ratio"),
    ({"bias": "last 2", "weights": [{"layer": "POS2", "ratio": 1}]}, "outside the bias window"),
    ({"n_bias_update": 2, "manual_weight_idx": [1], "weight_update_ratio": [0.5]}, "outside the bias window"),
    ({"n_bias_update": 2, "manual_weight_idx": [1, 2], "weight_update_ratio": [0.5]}, "weight_update_ratio"),
    ({"bias": "first 3"}, "bias"),
    ({"bias": "last 3", "bogus": 1}, "unknown field 'bogus'"),
    ("{not json", "invalid JSON"),
    ({}, "updates nothing"),
])
def test_invalid_scheme(tmp_path, scheme_file, small_model, scheme, message):
    if isinstance(scheme, dict):
        for entry in scheme.get("weights", []):
            if isinstance(entry["layer"], str) and entry["layer"].startswith("POS"):
                entry["layer"] = layer_index(small_model, int(entry["layer"][3:]))
    out = str(tmp_path / "out.tflite")
    r = run_cli("convert", small_model, "--sparse-scheme", scheme_file(scheme), "-o", out)
    assert_clean_failure(r, out, message)


def test_missing_files_and_flags(tmp_path, scheme_file, small_model):
    out = str(tmp_path / "out.tflite")
    assert_clean_failure(run_cli("convert", str(tmp_path / "nope.tflite"), "--sparse-scheme",
                                 scheme_file({"classifier": True}), "-o", out), out, "cannot read model")
    assert_clean_failure(run_cli("convert", small_model, "--sparse-scheme", str(tmp_path / "nope.json"), "-o", out),
                         out, "cannot read scheme")
    assert_clean_failure(run_cli("convert", small_model, "-o", out), out, "--sparse-scheme is required")


def test_already_converted_model_is_rejected(tmp_path, scheme_file, small_model):
    first = str(tmp_path / "train.tflite")
    assert run_cli("convert", small_model, "--sparse-scheme", scheme_file({"classifier": True}), "-o", first).returncode == 0
    out = str(tmp_path / "again.tflite")
    assert_clean_failure(run_cli("convert", first, "--sparse-scheme", scheme_file({"classifier": True}), "-o", out),
                         out, "already a training model")


def test_inspect_json(tmp_path, scheme_file, small_model):
    out = str(tmp_path / "train.tflite")
    assert run_cli("convert", small_model, "--sparse-scheme", scheme_file({"bias": "last 3", "classifier": True}),
                   "-o", out).returncode == 0
    r = run_cli("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ops"]["update"] == 3 and report["ops"]["init"] == 1
    assert report["trainable_bytes"] == sum(t["bytes"] for t in report["trainable_tensors"]) > 0
    assert report["estimated_arena_bytes"] > max(e["live_bytes"] for e in report["timeline"])
    text = run_cli("inspect", out)
    assert text.returncode == 0 and "estimated arena" in text.stdout


def test_fractional_weights_cost_one_byte_per_trainable_weight(tmp_path, scheme_file, small_model):
    scheme = scheme_file({"bias": "all", "weights": [{"layer": layer_index(small_model, 1), "ratio": 0.5}],
                          "classifier": True})
    reports = {}
    for flags in ((), ("--fractional-weights",)):
        out = str(tmp_path / f"train{len(flags)}.tflite")
        assert run_cli("convert", small_model, "--sparse-scheme", scheme, "-o", out, *flags).returncode == 0
        r = run_cli("inspect", out, "--json")
        assert r.returncode == 0, r.stderr
        reports[bool(flags)] = json.loads(r.stdout)
    plain, fractional = reports[False], reports[True]
    weights = [t for t in plain["trainable_tensors"] if t["kind"] == "weight"]
    fractions = [t for t in fractional["trainable_tensors"] if t["kind"] == "fraction"]
    assert len(weights) == 2 and [t["shape"] for t in fractions] == [t["shape"] for t in weights]
    extra = sum(t["bytes"] for t in fractions)
    assert fractional["trainable_bytes"] == plain["trainable_bytes"] + extra
    assert fractional["estimated_arena_bytes"] >= plain["estimated_arena_bytes"] + extra


def test_lower_bound_lies_between_every_ops_operands_and_the_planned_arena(small_model):
    g = convert(small_model, {"bias": "last 4", "classifier": True})
    estimate = memory.estimate(g)
    variables = sum(t.nbytes for t in g.referenced_tensors() if t.is_variable)
    operands = max(sum({id(t): t.nbytes for t in op.inputs + op.outputs
                        if t is not None and not t.is_variable and t.data is None}.values()) for op in g.ops)
    bound = memory.lower_bound(g)
    # Tensors that must outlive an op (saved activations) make it strictly larger than any op's operands.
    assert variables + operands < bound <= estimate.planned_bytes + estimate.variable_bytes
