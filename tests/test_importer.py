"""The importer of the reference implementation's int8 models (tflm_train.importer)."""
import glob
import io
import json
import os
import pickle
import time
import zipfile

import numpy as np
import pytest
from conftest import REPO, shared_path
from tflite_micro.tensorflow.lite.python import schema_py_generated as schema

from tflm_train import ir
from tflm_train.converter.scheme import conv_layers
from tflm_train.errors import UserError
from tflm_train.importer import import_mcunet
from tflm_train.importer.mcunet import build_graph, with_new_head
from tflm_train.importer.mcunet_sim import model_layers, run_layer, simulate_mcunet
from tflm_train.importer.pickle_format import CONV_KEYS, load_model_pickle
from tflm_train.tflm_runner import TflmSession
from tflm_train.reference.quantization import activation_range

MODELS = ("mcunet-5fps", "mbv2-w0.35")


def model_path(name: str) -> str:
    return shared_path("models", "tiny-training", f"{name}.pkl")


def random_images(count: int, resolution: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (count, 1, resolution, resolution, 3)).astype(np.int8)


def with_logits_output(graph: ir.Graph) -> bytes:
    """The model with the SOFTMAX's input (the logits) as a second output."""
    softmax = graph.ops[-1]
    graph.outputs.append(softmax.inputs[0])
    return ir.emit(graph)


@pytest.mark.parametrize("name", MODELS)
def test_import_is_fast_and_has_the_standard_classifier_shape(name):
    path = model_path(name)
    start = time.perf_counter()
    graph = import_mcunet(path)
    assert time.perf_counter() - start < 60

    (x,) = graph.inputs
    assert x.dtype == np.int8 and x.shape == (1, 128, 128, 3)
    assert np.isclose(x.quant.scale[0], 1 / 127.5) and x.quant.zero_point[0] == 0
    softmax, fc = graph.ops[-1], graph.ops[-2]
    assert (softmax.kind, fc.kind) == ("SOFTMAX", "FULLY_CONNECTED")
    assert softmax.inputs[0] is fc.outputs[0] and graph.outputs == softmax.outputs
    assert np.isclose(softmax.outputs[0].quant.scale[0], 1 / 256) and softmax.outputs[0].quant.zero_point[0] == -128
    assert fc.outputs[0].shape == (1, 1000)
    for op in conv_layers(graph):
        w = op.inputs[1]
        channel_axis = 3 if op.kind == "DEPTHWISE_CONV_2D" else 0
        assert w.quant.axis == channel_axis and w.quant.scale.size == w.shape[channel_axis]


@pytest.mark.parametrize("name", MODELS)
def test_dead_channels_become_zero_weights_with_sensible_scales(name):
    """Dead channels (bias INT32_MIN, w_scale ~4e-9) would overflow TFLM's accumulator and break QAS."""
    graph = import_mcunet(model_path(name))
    for op in conv_layers(graph):
        w, b = op.inputs[1], op.inputs[2]
        assert b.data.min() > np.iinfo(np.int32).min
        assert w.quant.scale.min() > 1e-6, op.outputs[0].name


@pytest.mark.parametrize("name", MODELS)
def test_declared_activations_keep_the_full_int8_range(name):
    """ReLU is folded into outputs with zero point -128; the declared activation must not clamp more."""
    graph = import_mcunet(model_path(name))
    for op in conv_layers(graph):
        y = op.outputs[0]
        act = op.options.fusedActivationFunction
        assert (act != schema.ActivationFunctionType.NONE) == (y.quant.zero_point[0] == -128), y.name
        assert activation_range(act, float(y.quant.scale[0]), int(y.quant.zero_point[0])) == (-128, 127), y.name


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes,resolution", [(None, None), (10, None), (None, 96)])
def test_tflm_matches_the_simulation_bit_for_bit(name, num_classes, resolution):
    """TFLM runs the imported graph exactly as the pickle's layers with TFLM's rounding."""
    model = load_model_pickle(model_path(name))
    if num_classes is not None:
        model = with_new_head(model, num_classes, seed=3)
    graph = build_graph(model, resolution)
    r = resolution or 128
    classes = num_classes or 1000
    images = random_images(3, r, seed=r + classes)
    with TflmSession(with_logits_output(graph)) as session:
        results = [session.invoke([x]) for x in images]
    for x, (probabilities, logits) in zip(images, results):
        assert probabilities.shape == logits.shape == (1, classes)
        np.testing.assert_array_equal(logits, simulate_mcunet(model, x, rounding="tflm"))


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_is_within_one_lsb_of_the_reference_arithmetic(name):
    """Fed TFLM's own layer inputs, each pickle layer (reference rounding) gives TFLM's output
    up to one LSB on under 1% of the values: TFLM's fixed-point double rounding."""
    model = load_model_pickle(model_path(name))
    graph = import_mcunet(model_path(name))
    tensors = graph.referenced_tensors()
    index = {t.name: i for i, t in enumerate(tensors)}
    layers = model_layers(model)
    names = ["input"] + [layer.name for layer in layers]
    read = [index[graph_tensor_name(n)] for n in names]
    (x,) = random_images(1, 128, seed=11)
    with TflmSession(ir.emit(graph), preserve_all_tensors=True) as session:
        session.invoke([x])
        values = {n: session.tensor(i).reshape(tensors[i].shape)[0].astype(np.int64) for n, i in zip(names, read)}
    for layer in layers:
        inputs = [values[n] for n in layer.inputs]
        expected = run_layer(layer, inputs, rounding="reference")
        diff = np.abs(values[layer.name].reshape(expected.shape) - expected)
        assert diff.max() <= 1, layer.name
        if layer.kind == "avgpool":   # TFLM rounds ties away from zero, the reference to even
            count = inputs[0].shape[0] * inputs[0].shape[1]
            ties = 2 * (inputs[0].sum(axis=(0, 1)) % count) == count
            assert not np.any((diff.reshape(-1) != 0) & ~ties)
        else:
            assert (diff == 0).mean() >= 0.99, layer.name


def graph_tensor_name(layer_name: str) -> str:
    """The importer's name for the tensor a simulation layer produces."""
    if layer_name in ("input", "classifier"):
        return {"input": "input", "classifier": "classifier/logits"}[layer_name]
    return f"{layer_name}/output"


def test_resolution_rebuilds_every_shape():
    graph = import_mcunet(model_path("mcunet-5fps"), resolution=96)
    assert graph.inputs[0].shape == (1, 96, 96, 3)
    pool = next(op for op in graph.ops if op.kind == "AVERAGE_POOL_2D")
    _, h, w, _ = pool.inputs[0].shape
    assert (pool.options.filterHeight, pool.options.filterWidth) == (h, w) == (3, 3)
    for op in graph.ops:   # every producer's shape is what its consumer reads
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            assert op.outputs[0].shape[-1] == op.inputs[2].shape[0]


def test_new_head_is_deterministic_and_uses_the_int8_range():
    model = load_model_pickle(model_path("mbv2-w0.35"))
    a = with_new_head(model, 10, seed=0)["classifier"]["params"]
    b = with_new_head(model, 10, seed=0)["classifier"]["params"]
    c = with_new_head(model, 10, seed=1)["classifier"]["params"]
    np.testing.assert_array_equal(a["weight"], b["weight"])
    assert not np.array_equal(a["weight"], c["weight"])
    assert a["weight"].shape == (10, model["classifier"]["in_channel"], 1, 1)
    assert np.all(np.abs(a["weight"]).reshape(10, -1).max(axis=1) == 127)
    assert not a["bias"].any() and a["y_zero"] == 0
    assert model["classifier"]["params"]["weight"].shape[0] == 1000   # the original is untouched


# ---------------------------------------------------------------- bad input

def _zip_with(tmp_path, name: str, members: dict) -> str:
    path = str(tmp_path / name)
    with zipfile.ZipFile(path, "w") as z:
        for member, payload in members.items():
            z.writestr(member, payload)
    return path


class _TorchLike:   # pickled by reference to this test module: an unexpected global
    pass


def test_bad_files_are_user_errors(tmp_path):
    not_zip = tmp_path / "model.pkl"
    not_zip.write_bytes(b"\x80\x04K\x01.")
    cases = {
        "no such file": str(tmp_path / "missing.pkl"),
        "not a torch zip": str(not_zip),
        "no data.pkl": _zip_with(tmp_path, "a.pkl", {"archive/version": b"3\n"}),
        "references": _zip_with(tmp_path, "b.pkl", {"archive/data.pkl": pickle.dumps(_TorchLike())}),
        "expected a dict": _zip_with(tmp_path, "c.pkl", {"archive/data.pkl": pickle.dumps({"blocks": []})}),
        "corrupt": _zip_with(tmp_path, "d.pkl", {"archive/data.pkl": b"\x80\x04garbage"}),
    }
    for message, path in cases.items():
        with pytest.raises(UserError, match=message):
            import_mcunet(path)


def test_wrong_structure_is_a_user_error(tmp_path):
    model = load_model_pickle(model_path("mcunet-5fps"))
    model["blocks"][3]["depthwise"]["params"]["weight"] = np.zeros((3, 3), np.int8)
    buffer = io.BytesIO()
    pickle.dump(model, buffer)
    path = _zip_with(tmp_path, "e.pkl", {"archive/data.pkl": buffer.getvalue()})
    with pytest.raises(UserError, match=r"blocks\[3\]\.depthwise"):
        import_mcunet(path)


@pytest.mark.parametrize("kwargs", [dict(num_classes=1), dict(num_classes="10"), dict(num_classes=True),
                                    dict(resolution=0), dict(resolution=-5), dict(resolution=96.0),
                                    dict(resolution=100000), dict(seed=-1)])
def test_bad_options_are_user_errors(kwargs):
    with pytest.raises(UserError, match="num-classes|resolution|seed"):
        import_mcunet(model_path("mcunet-5fps"), **kwargs)


# ---------------------------------------------------------------- published schemes

SCHEMES = sorted(glob.glob(os.path.join(REPO, "examples", "paper_schemes", "*.json")))


def test_published_schemes_are_shipped_with_their_license():
    assert SCHEMES
    assert os.path.exists(os.path.join(REPO, "examples", "paper_schemes", "LICENSE"))


@pytest.mark.parametrize("scheme_path", SCHEMES, ids=os.path.basename)
def test_published_scheme_indices_land_on_late_convs(scheme_path):
    """The reference implementation counts nn.Conv2d modules: its classifier (a Linear)
    is not among them, so the bias window is the last n_bias_update convs *before* it."""
    name = os.path.basename(scheme_path).rsplit("_", 1)[0]
    model = load_model_pickle(model_path(name))
    graph = import_mcunet(model_path(name))
    convs = conv_layers(graph)
    backbone, classifier = convs[:-1], convs[-1]
    assert classifier.kind == "FULLY_CONNECTED"
    assert len(backbone) == 1 + sum(block[k] is not None for block in model["blocks"] for k in CONV_KEYS)

    with open(scheme_path) as f:
        scheme = json.load(f)
    window_start = len(backbone) - scheme["n_bias_update"]
    assert len(scheme["manual_weight_idx"]) == len(scheme["weight_update_ratio"])
    for index, ratio in zip(scheme["manual_weight_idx"], scheme["weight_update_ratio"]):
        assert window_start <= index < len(backbone)
        if ratio > 0:   # a weight update: pointwise convs, and one depthwise in mbv2-w0.35_49kb
            op = backbone[index]
            is_pointwise = op.kind == "CONV_2D" and op.inputs[1].shape[1:3] == (1, 1)
            assert is_pointwise or op.kind == "DEPTHWISE_CONV_2D"
            assert int(op.inputs[1].shape[-1] * ratio) >= 1
