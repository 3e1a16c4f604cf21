"""Acceptance: training steps run by the STOCK TFLM interpreter with our micro kernels.

Every check compares TFLM (in a worker process, tflm_runner.TflmSession) with the
numpy reference executor: integer tensors and updated parameters bit for bit,
float tensors (gradients, loss) within 1e-5 relative.
"""
import functools
import itertools
import json
import os
import re

import numpy as np
import pytest

from conftest import REPO, shared_path
import tf_models
from tflm_train import ir
from tflm_train.converter import lowering, metadata, pipeline
from tflm_train.converter.scheme import LAYER_KINDS
from tflm_train.errors import UserError
from tflm_train.reference import Executor
from tflm_train.kernels_grad.conv_chain import in_place_offset
from tflm_train.schema.training_ops_generated import ConvChainOptions, ParamKind
from tflm_train.tflm_runner import TflmSession, run_once

FLOAT_RTOL = 1e-5
ACTIVATIONS = ("relu", "relu6", None)


# ---------------------------------------------------------------- small random TF models

def _activation(rng):
    return ACTIVATIONS[rng.integers(len(ACTIVATIONS))]


def _strided_mean_model(seed: int) -> bytes:
    """conv(k, s2, SAME) → dw(VALID, multiplier 2-3) → pw → PAD → dw(s2, VALID) → global mean → FC."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    size, channels = int(rng.integers(9, 14)), int(rng.choice([1, 3]))
    inp = tf.keras.Input((size, size, channels), batch_size=1)
    x = layers.Conv2D(int(rng.choice([3, 5, 7])), int(rng.choice([3, 5, 7])), strides=2, padding="same",
                      activation=_activation(rng), bias_initializer="random_normal")(inp)
    x = layers.DepthwiseConv2D(3, depth_multiplier=int(rng.integers(2, 4)), padding="valid", activation=_activation(rng),
                               bias_initializer="random_normal")(x)
    x = layers.Conv2D(int(rng.choice([5, 7, 9])), 1, activation=_activation(rng), bias_initializer="random_normal")(x)
    x = layers.ZeroPadding2D(2)(x)  # wider than SAME needs, so not folded into the conv below: a PAD op stays
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", bias_initializer="random_normal")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(int(rng.integers(2, 6)), bias_initializer="random_normal")(x)
    return tf_models.quantize(tf.keras.Model(inp, layers.Softmax()(x)), (size, size, channels), seed)


def _residual_flatten_model(seed: int) -> bytes:
    """conv(k, SAME) → dilated conv → conv(s2, VALID) → [PAD → (dw + dw) → pw] + skip → flatten → FC."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    size, channels = int(rng.integers(8, 12)), int(rng.integers(1, 4))
    width = int(rng.choice([5, 7, 9]))
    inp = tf.keras.Input((size, size, channels), batch_size=1)
    x = layers.Conv2D(int(rng.choice([4, 6])), int(rng.choice([3, 5, 7])), padding="same", activation=_activation(rng),
                      bias_initializer="random_normal")(inp)
    x = layers.Conv2D(int(rng.choice([3, 5])), 3, dilation_rate=2, padding="same", activation=_activation(rng),
                      bias_initializer="random_normal")(x)
    x = layers.Conv2D(width, 3, strides=2, padding="valid", activation=_activation(rng), bias_initializer="random_normal")(x)
    k = int(rng.choice([3, 5]))
    # A one-sided PAD read by two depthwise convs: its gradient is a sum, so the stock SLICE cuts it
    # (a PAD read by one conv folds into that conv's input-gradient op, as in _strided_mean_model).
    padded = layers.ZeroPadding2D(((k - 1, 0), (k - 1, 0)))(x)
    y = layers.Add()([layers.DepthwiseConv2D(k, padding="valid", activation=_activation(rng),
                                             bias_initializer="random_normal")(padded) for _ in range(2)])
    y = layers.Conv2D(width, 1, bias_initializer="random_normal")(y)
    x = layers.Add()([x, y])
    x = layers.Flatten()(x)
    x = layers.Dense(int(rng.integers(2, 6)), bias_initializer="random_normal")(x)
    return tf_models.quantize(tf.keras.Model(inp, layers.Softmax()(x)), (size, size, channels), seed)


FAMILIES = {"strided_mean": _strided_mean_model, "residual_flatten": _residual_flatten_model}


@functools.lru_cache(maxsize=None)
def small_model(family: str, seed: int) -> bytes:
    return FAMILIES[family](seed)


def scheme_for(graph: ir.Graph, kind: str) -> dict:
    """full: every bias and weight; sparse: the last 4 biases, one conv's weight split at 0.5 and
    one depthwise weight at 0.5 (frozen channels), the classifier in full."""
    convs = [i for i, op in enumerate(graph.ops) if op.kind in LAYER_KINDS]
    if kind == "full":
        return {"bias": "all", "weights": [{"layer": i, "ratio": 1} for i in convs[:-1]], "classifier": True}
    window = convs[-4:-1]
    conv = next(i for i in window if graph.ops[i].kind == "CONV_2D")
    depthwise = next(i for i in window if graph.ops[i].kind == "DEPTHWISE_CONV_2D")
    return {"bias": "last 4", "weights": [{"layer": conv, "ratio": 0.5}, {"layer": depthwise, "ratio": 0.5}],
            "classifier": True}


# ---------------------------------------------------------------- shared helpers

def convert(model: bytes, scheme, reorder=True, rounding="nearest", **options):
    """(training model bytes, its graph as reloaded from those bytes, training metadata)."""
    graph = ir.load(model)
    if not isinstance(scheme, dict):
        scheme = scheme(graph)
    pipeline.convert(graph, scheme, pipeline.ConvertOptions(reorder=reorder, rounding=rounding, **options))
    data = ir.emit(graph)
    graph = ir.load(data)  # tensor indices of this graph are the interpreter's
    return data, graph, metadata.read(graph)


def assert_float_close(actual, expected, what):
    """Relative to the tensor's largest magnitude, so exact zeros need no special case."""
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=FLOAT_RTOL, atol=FLOAT_RTOL * scale, err_msg=what)


def assert_tensors_match(session, executor, graph, gradients=True):
    """Every non-constant tensor (activations, gradients, variables): integers exact, floats close.
    gradients=False after an inference step, which leaves float gradients unspecified. A
    TFLT_CONV_CHAIN's scratch is unspecified too."""
    scratch = {id(op.outputs[1]) for op in graph.ops if op.kind == "TFLT_CONV_CHAIN"}
    for index, tensor in enumerate(graph.referenced_tensors()):
        if tensor.is_constant or (tensor.dtype == np.float32 and not gradients) or id(tensor) in scratch:
            continue
        actual = session.tensor(index).reshape(tensor.shape)
        expected = executor.value(tensor)
        what = f"tensor {index} {tensor.name!r}"
        if tensor.dtype == np.float32:
            assert_float_close(actual, expected, what)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=what)


def trainable_pairs(graph, md):
    """(tensor index, variable, the trainable slice of its initial constant) per trainable."""
    tensors = graph.referenced_tensors()
    pairs = []
    for trainable in md.trainables:
        variable = tensors[trainable.variable]
        pairs.append((trainable.variable, variable, tensors[trainable.initial_value].data[..., :variable.shape[-1]]))
    return pairs


def assert_trainables_match(session, executor, graph, md):
    for index, variable, _ in trainable_pairs(graph, md):
        np.testing.assert_array_equal(session.tensor(index).reshape(variable.shape), executor.value(variable),
                                      err_msg=variable.name)


def changed_elements(executor, graph, md) -> int:
    return sum(int((executor.value(var) != initial).sum()) for _, var, initial in trainable_pairs(graph, md))


def training_inputs(image, label, lr):
    return [image, np.array([label], np.int32), np.array([lr], np.float32)]


def doc_training_op_kinds() -> set:
    with open(os.path.join(REPO, "docs", "training_ops.md")) as f:
        return set(re.findall(r"`(TFLT_[A-Z0-9_]+)`", f.read()))


# ---------------------------------------------------------------- 1. every op kind, small models

SMALL_CASES = list(itertools.product(FAMILIES, (0, 1), ("full", "sparse"), (True, False), ("nearest", "stochastic")))


def _case_id(case):
    family, seed, kind, reorder, rounding = case
    return f"{family}{seed}-{kind}-{'reorder' if reorder else 'noreorder'}-{rounding}"


@pytest.mark.parametrize("case", SMALL_CASES, ids=_case_id)
def test_small_model_steps_match_reference(case):
    family, seed, kind, reorder, rounding = case
    data, graph, md = convert(small_model(family, seed), lambda g: scheme_for(g, kind), reorder, rounding)
    classes = graph.outputs[0].shape[-1]
    rng = np.random.default_rng(seed)
    executor = Executor(graph)
    # Two training steps (the second with a large rate: clamped updates), then inference.
    steps = [(int(rng.integers(classes)), 0.5), (int(rng.integers(classes)), 4.0), (-1, 4.0)]
    with TflmSession(data, preserve_all_tensors=True) as session:
        for label, lr in steps:
            inputs = training_inputs(rng.integers(-128, 128, graph.inputs[0].shape, dtype=np.int8), label, lr)
            expected = executor.invoke(inputs)
            actual = session.invoke(inputs)
            for a, e in zip(actual[:-1], expected[:-1]):
                np.testing.assert_array_equal(a, e)
            assert_float_close(actual[-1], expected[-1], "loss")
            assert_tensors_match(session, executor, graph, gradients=label >= 0)
        assert session.model_bytes() == ir.without_offline_plan(data)  # as given to the linear planner
    assert changed_elements(executor, graph, md) > 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reorder,rounding", [(True, "nearest"), (False, "stochastic")])
def test_fractional_weights_step_like_the_reference(family, reorder, rounding):
    """With --fractional-weights, small steps (lr 1e-3) move the fractions in TFLM exactly as in
    the reference; every weight update carries its fraction."""
    data, graph, md = convert(small_model(family, 0), lambda g: scheme_for(g, "full"), reorder, rounding,
                              fractional_weights=True)
    tensors = graph.referenced_tensors()
    fractions = [tensors[t.fraction] for t in md.trainables if t.fraction >= 0]
    assert len(fractions) == sum(t.kind == ParamKind.WEIGHT for t in md.trainables) > 0
    updates = [op for op in graph.ops if op.kind in ("TFLT_CONV_GRAD_UPDATE", "TFLT_SGD_UPDATE")]
    assert {id(f) for f in fractions} == {id(t) for op in updates for t in op.inputs[6 if reorder else 5:]
                                          if t is not None and t.name.endswith("/trainable_weight_fraction")}
    classes = graph.outputs[0].shape[-1]
    rng = np.random.default_rng(3)
    executor = Executor(graph)
    with TflmSession(data, preserve_all_tensors=True) as session:
        for label in (1 % classes, 2 % classes, -1):
            inputs = training_inputs(rng.integers(-128, 128, graph.inputs[0].shape, dtype=np.int8), label, 1e-3)
            expected = executor.invoke(inputs)
            actual = session.invoke(inputs)
            np.testing.assert_array_equal(actual[0], expected[0])
            assert_tensors_match(session, executor, graph, gradients=label >= 0)
    assert sum(int((executor.value(f) != 0).sum()) for f in fractions) > 0


def test_small_models_cover_every_training_op_kind():
    """The cases above run every TFLT_* op of docs/training_ops.md and the stock float backward builtins
    (TFLT_CONV_CHAIN only where a chain lowers the forward's peak: residual_flatten seed 1, sparse)."""
    seen = set()
    for family, seed, kind, reorder in itertools.product(FAMILIES, (0, 1), ("full", "sparse"), (True, False)):
        _, graph, _ = convert(small_model(family, seed), lambda g: scheme_for(g, kind), reorder)
        seen |= {op.kind for op in graph.ops if op.role != "forward" or op.custom}
    documented = doc_training_op_kinds()
    assert len(documented) >= 10
    assert documented <= seen, f"not exercised: {sorted(documented - seen)}"
    assert {"SLICE", "RESHAPE", "ADD"} <= seen


# ---------------------------------------------------------------- 2. person_detect and MLPerf VWW

def bmp_image(name: str) -> np.ndarray:
    """The int8 pixel values of a 96×96 8-bit BMP (rows stored bottom-up)."""
    with open(shared_path("models", "tflm", name), "rb") as f:
        raw = f.read()
    return np.frombuffer(raw[1078:1078 + 96 * 96], np.int8).reshape(96, 96)[::-1]


def person_detect_input(name):
    return bmp_image(name).reshape(1, 96, 96, 1).copy()


def vww_input(name):
    brightness = (bmp_image(name).astype(np.float32) + 128.0) / 255.0
    return np.repeat(brightness.reshape(1, 96, 96, 1), 3, axis=-1)


PERSON_DETECT_SCHEME = {"bias": "last 10", "weights": [{"layer": 24, "ratio": 1}, {"layer": 26, "ratio": 0.25}],
                        "classifier": True}
REAL_MODELS = {
    "person_detect": (("models", "tflm", "person_detect.tflite"), person_detect_input),
    "vww": (("models", "mlperf-tiny", "visual_wake_words.tflite"), vww_input),
}


def real_model_scheme(name):
    if name == "person_detect":
        return PERSON_DETECT_SCHEME
    with open(os.path.join(REPO, "examples", "vww", "s.json")) as f:
        return json.load(f)


def test_person_detect_scheme_names_two_pointwise_layers():
    graph = ir.load_file(shared_path(*REAL_MODELS["person_detect"][0]))
    for entry in PERSON_DETECT_SCHEME["weights"]:
        op = graph.ops[entry["layer"]]
        assert op.kind == "CONV_2D" and op.inputs[1].shape[1:3] == (1, 1)


@pytest.mark.parametrize("name", REAL_MODELS)
@pytest.mark.parametrize("reorder,rounding", [(True, "nearest"), (False, "stochastic")])
def test_real_model_inference_step_and_reset(name, reorder, rounding):
    path_parts, make_input = REAL_MODELS[name]
    original = ir.read_file(shared_path(*path_parts))
    images = {image: make_input(image) for image in ("person.bmp", "no_person.bmp")}
    original_outputs = {image: run_once(original, [x])[0] for image, x in images.items()}
    if name == "person_detect":  # the published outputs of the stock model
        assert original_outputs["person.bmp"].tolist() == [[-113, 113]]
        assert original_outputs["no_person.bmp"].tolist() == [[57, -57]]

    data, graph, md = convert(original, real_model_scheme(name), reorder, rounding)
    executor = Executor(graph)

    def assert_inference_is_the_original(session):
        for image, x in images.items():
            outputs = session.invoke(training_inputs(x, -1, 0.05))
            np.testing.assert_array_equal(outputs[0], original_outputs[image])
            assert outputs[-1].tolist() == [0.0]
        for index, variable, initial in trainable_pairs(graph, md):
            np.testing.assert_array_equal(session.tensor(index).reshape(variable.shape), initial,
                                          err_msg=variable.name)
        assert session.tensor(md.state).tolist() == [1, 0]

    with TflmSession(data, preserve_all_tensors=True) as session:
        assert_inference_is_the_original(session)
        step = training_inputs(images["person.bmp"], 1, 0.05)
        for image in images.values():  # the reference sees the same invocations
            executor.invoke(training_inputs(image, -1, 0.05))
        expected = executor.invoke(step)
        actual = session.invoke(step)
        assert_float_close(actual[-1], expected[-1], "loss")
        assert actual[-1][0] > 0
        assert_trainables_match(session, executor, graph, md)
        assert changed_elements(executor, graph, md) > 0
        assert session.model_bytes() == ir.without_offline_plan(data)  # as given to the linear planner

        session.reset()
        assert_inference_is_the_original(session)
        assert session.model_bytes() == ir.without_offline_plan(data)  # as given to the linear planner


def mcunet_48():
    from tflm_train.importer.mcunet import import_mcunet
    return ir.emit(import_mcunet(shared_path("models/tiny-training/mcunet-5fps.pkl"), num_classes=10,
                                 resolution=48))


@pytest.mark.skipif(not shared_path("models/tiny-training/mcunet-5fps.pkl"), reason="needs ../shared (MCUNet)")
def test_mcunet_with_lowered_forward_infers_like_the_import_and_steps_like_the_reference():
    """Lowered convs (flash requantisation, PADs folded) against the stock kernels of the imported model."""
    original = mcunet_48()
    with open(os.path.join(REPO, "examples", "paper_schemes", "mcunet-5fps_49kb.json")) as f:
        data, graph, md = convert(original, json.load(f))
    assert {"TFLT_CONV_2D_SPLIT"} <= {op.kind for op in graph.ops if op.role == "forward"}
    rng = np.random.default_rng(0)
    images = [rng.integers(-128, 128, (1, 48, 48, 3), dtype=np.int8) for _ in range(2)]
    executor = Executor(graph)
    with TflmSession(data, preserve_all_tensors=True) as session:
        for image in images:
            np.testing.assert_array_equal(session.invoke(training_inputs(image, -1, 0.05))[0],
                                          run_once(original, [image])[0])
            executor.invoke(training_inputs(image, -1, 0.05))
        step = training_inputs(images[0], 3, 0.05)
        assert_float_close(session.invoke(step)[-1], executor.invoke(step)[-1], "loss")
        assert_trainables_match(session, executor, graph, md)
        assert changed_elements(executor, graph, md) > 0


@pytest.mark.parametrize("name", ["person_detect", "mcunet"])
def test_conv_chains_train_exactly_like_the_layers_they_fuse(name, monkeypatch):
    """The same model converted with TFLT_CONV_CHAIN (person_detect's first 18 layers; MCUNet's stem
    and first blocks) and without (fusion disabled): two training steps and an inference step in
    TFLM give the same outputs, loss and trained variables, byte for byte. The first chain writes
    its output over the input image (the model's offline plan, which TFLM follows; reading the
    variables needs TFLM's linear planner, which sets the plan aside, so the outputs of the steps,
    which each depend on the variables the steps before left, are compared with the plan too)."""
    if name == "mcunet":
        model = mcunet_48()
        with open(os.path.join(REPO, "examples", "paper_schemes", "mcunet-5fps_49kb.json")) as f:
            scheme = json.load(f)
        images = [np.random.default_rng(i).integers(-128, 128, (1, 48, 48, 3), dtype=np.int8) for i in range(2)]
    else:
        model, scheme = ir.read_file(shared_path(*REAL_MODELS[name][0])), PERSON_DETECT_SCHEME
        images = [person_detect_input(image) for image in ("person.bmp", "no_person.bmp")]
    chained = convert(model, scheme)
    monkeypatch.setattr(lowering, "fuse_conv_chains", lambda graph, ops: ops)
    plain = convert(model, scheme)
    assert "TFLT_CONV_CHAIN" in {op.kind for op in chained[1].ops}
    assert "TFLT_CONV_CHAIN" not in {op.kind for op in plain[1].ops}
    graph = chained[1]
    first_chain = next(op for op in graph.ops if op.kind == "TFLT_CONV_CHAIN")
    x, y = first_chain.inputs[0], first_chain.outputs[0]
    assert x is graph.inputs[0] and {id(x), id(y)} <= set(graph.arena_offsets)
    assert abs(graph.arena_offsets[id(x)] - graph.arena_offsets[id(y)]) < x.nbytes  # overlapping
    steps = [training_inputs(images[0], 1, 0.05), training_inputs(images[1], 0, 0.5), training_inputs(images[0], -1, 0)]
    results = []
    for data, graph, md in (chained, plain):
        with TflmSession(data, preserve_all_tensors=True) as session:
            outputs = [session.invoke(step) for step in steps]
            results.append((outputs, [session.tensor(index) for index, _, _ in trainable_pairs(graph, md)]))
    (chained_outputs, chained_variables), (plain_outputs, plain_variables) = results
    with TflmSession(chained[0]) as session:
        in_place_outputs = [session.invoke(step) for step in steps]
    for a, b, c in zip(sum(chained_outputs, []), sum(plain_outputs, []), sum(in_place_outputs, [])):
        assert a.tobytes() == b.tobytes() == c.tobytes()
    assert [v.tobytes() for v in chained_variables] == [v.tobytes() for v in plain_variables]
    assert any((v.reshape(initial.shape) != initial).any()
               for v, (_, _, initial) in zip(chained_variables, trainable_pairs(chained[1], chained[2])))


def test_tflm_refuses_a_chain_output_placed_over_unread_input_rows():
    """The chain's Eval checks the offline plan: y one alignment step further into x than its rows allow
    would overwrite image rows before the chain reads them."""
    with open(os.path.join(REPO, "examples", "paper_schemes", "mcunet-5fps_49kb.json")) as f:
        _, graph, _ = convert(mcunet_48(), json.load(f))
    chain = next(op for op in graph.ops if op.kind == "TFLT_CONV_CHAIN")
    x, y = chain.inputs[0], chain.outputs[0]
    limit = in_place_offset(ConvChainOptions.from_bytes(chain.custom_options).stages, x.shape)
    assert graph.arena_offsets[id(y)] - graph.arena_offsets[id(x)] <= limit
    too_far = (limit // 16 + 1) * 16
    graph.arena_offsets = {id(x): max(0, -too_far), id(y): max(0, too_far)}
    image = np.zeros((1, 48, 48, 3), np.int8)
    with TflmSession(ir.emit(graph)) as session:
        with pytest.raises(UserError, match="TFLT_CONV_CHAIN: y overlaps x rows still to be read"):
            session.invoke(training_inputs(image, 1, 0.05))


# ---------------------------------------------------------------- 3. loss falls on a real binary task

LFW_STEPS = 50
LFW_LEARNING_RATE = 0.05  # 0.01-0.02 learns too slowly to show in 50 steps; 0.05 roughly halves the loss


def lfw_person_detect_inputs(graph):
    """skimage's lfw_subset (100 faces, then 100 non-faces, 25×25 in [0, 1]) as person_detect
    inputs: resized to 96×96, mapped to the real range [-1, 1] and quantized like the model input.
    Faces are class 1 (person)."""
    pytest.importorskip("skimage", reason="scikit-image (the lfw_subset data set) is not installed")
    from skimage import data, transform
    images = data.lfw_subset()
    quant = graph.inputs[0].quant
    resized = np.stack([transform.resize(image, (96, 96), order=1, anti_aliasing=False) for image in images])
    quantized = np.round((resized * 2 - 1) / quant.scale[0] + quant.zero_point[0])
    inputs = np.clip(quantized, -128, 127).astype(np.int8).reshape(-1, 1, 96, 96, 1)
    labels = np.array([1] * 100 + [0] * 100, np.int32)
    return inputs, labels


def test_loss_falls_on_faces_vs_non_faces():
    data, graph, md = convert(ir.read_file(shared_path("models", "tflm", "person_detect.tflite")),
                              PERSON_DETECT_SCHEME)
    inputs, labels = lfw_person_detect_inputs(graph)
    order = np.random.default_rng(0).permutation(len(labels))[:LFW_STEPS]
    steps = [training_inputs(inputs[i], labels[i], LFW_LEARNING_RATE) for i in order]
    executor = Executor(graph)
    with TflmSession(data, preserve_all_tensors=True) as session:
        losses = []
        for step in steps:
            actual = session.invoke(step)[-1]
            assert_float_close(actual, executor.invoke(step)[-1], f"loss at step {len(losses)}")
            losses.append(float(actual[0]))
        assert_trainables_match(session, executor, graph, md)
        final = [session.tensor(index).copy() for index, _, _ in trainable_pairs(graph, md)]

        session.reset()  # deterministic: the same steps after a reset give the same losses and weights
        assert [float(session.invoke(step)[-1][0]) for step in steps] == losses
        for (index, variable, _), expected in zip(trainable_pairs(graph, md), final):
            np.testing.assert_array_equal(session.tensor(index), expected, err_msg=variable.name)

    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.7 * first, f"mean loss of the first 10 steps {first:.3f}, of the last 10 {last:.3f}"


# ---------------------------------------------------------------- 4. mismatched tensors fail cleanly

def _patched_model(kind, slot, make_tensor, reorder):
    """A small training graph whose first `kind` op reads make_tensor(old tensor, op) at input `slot`."""
    graph = convert(small_model("residual_flatten", 0), lambda g: scheme_for(g, "sparse"), reorder)[1]
    op = next(op for op in graph.ops if op.kind == kind)
    op.inputs[slot] = graph.add_tensor(make_tensor(op.inputs[slot], op))
    return graph


def _constant(name, shape, dtype):
    return ir.Tensor(name, shape, dtype, data=np.zeros(shape, dtype))


def _variable(name, shape, dtype):
    return ir.Tensor(name, shape, dtype, is_variable=True)


MISMATCHES = {
    "xent_label_float": ("TFLT_SOFTMAX_XENT", 1, True,
                         lambda old, op: _constant("bad_label", (1,), np.float32),
                         "TFLT_SOFTMAX_XENT: label must be int32, got float32"),
    "xent_label_shape": ("TFLT_SOFTMAX_XENT", 1, True,
                         lambda old, op: _constant("bad_label", (2,), np.int32),
                         "TFLT_SOFTMAX_XENT: label must have shape [1]"),
    "input_grad_w_scale_length": ("TFLT_CONV_INPUT_GRAD", 5, True,
                                  lambda old, op: _constant("bad_w_scale", (old.shape[0] + 1,), np.float32),
                                  "TFLT_CONV_INPUT_GRAD: w_scale must have shape"),
    "sgd_param_float": ("TFLT_SGD_UPDATE", 4, False,
                        lambda old, op: _variable("bad_param", old.shape, np.float32),
                        "TFLT_SGD_UPDATE: param must be int8 or int32"),
    "sgd_qas_too_short": ("TFLT_SGD_UPDATE", 5, False,
                          lambda old, op: _constant("bad_qas", (op.inputs[4].shape[0] - 1,), np.float32),
                          "TFLT_SGD_UPDATE: qas must be [O] with O >= param's channels"),
    "init_pair_shape": ("TFLT_TRAIN_INIT", 3, True,
                        lambda old, op: _variable("bad_dst", old.shape[:-1] + (op.inputs[2].shape[-1] + 1,),
                                                  old.dtype),
                        "TFLT_TRAIN_INIT: inputs 2, 3: dst must have src's"),
    "update_x_float": ("TFLT_CONV_GRAD_UPDATE", 5, True,
                       lambda old, op: _constant("bad_x", old.shape, np.float32),
                       "TFLT_CONV_GRAD_UPDATE: x must be int8, got float32"),
    "update_w_train_shape": ("TFLT_CONV_GRAD_UPDATE", 6, True,
                             lambda old, op: _variable("bad_w_train", old.shape[:-1] + (old.shape[-1] + 1,), np.int8),
                             "TFLT_CONV_GRAD_UPDATE: the weight must be [O, kh, kw, K]"),
    "split_w_train_shape": ("TFLT_CONV_2D_SPLIT", 2, True,
                            lambda old, op: _variable("bad_w_train", old.shape[:-1] + (op.inputs[1].shape[-1] + 1,), np.int8),
                            "TFLT_CONV_2D_SPLIT: w_train must have w's shape"),
    "weight_grad_x_int32": ("TFLT_CONV_WEIGHT_GRAD", 3, False,
                            lambda old, op: _constant("bad_x", old.shape, np.int32),
                            "TFLT_CONV_WEIGHT_GRAD: x must be int8"),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_mismatched_tensor_is_reported_not_a_crash(case):
    kind, slot, reorder, make_tensor, message = MISMATCHES[case]
    graph = _patched_model(kind, slot, make_tensor, reorder)
    image = np.zeros(graph.inputs[0].shape, np.int8)
    with pytest.raises(UserError) as failure:
        with TflmSession(ir.emit(graph)) as session:
            session.invoke(training_inputs(image, 0, 0.1))
    assert message in str(failure.value)
    assert "crashed" not in str(failure.value)


def test_label_out_of_range_fails_at_invoke_and_the_session_survives():
    data, graph, _ = convert(small_model("residual_flatten", 0), lambda g: scheme_for(g, "sparse"))
    classes = graph.outputs[0].shape[-1]
    image = np.zeros(graph.inputs[0].shape, np.int8)
    with TflmSession(data) as session:
        with pytest.raises(UserError) as failure:
            session.invoke(training_inputs(image, classes, 0.1))
        assert f"TFLT_SOFTMAX_XENT: label {classes} is out of range for {classes} classes" in str(failure.value)
        assert "crashed" not in str(failure.value)
        outputs = session.invoke(training_inputs(image, -1, 0.1))  # the worker is still alive
        assert outputs[-1].tolist() == [0.0]
