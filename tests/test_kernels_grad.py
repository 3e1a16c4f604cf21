"""The training ops' numpy reference (tflm_train/kernels_grad) against TensorFlow.

Gradients are checked against tf.GradientTape on the dequantized layer with the
same straight-through mask; the split conv against TFLite's reference int8
kernels bit for bit; the update rule, exp_ref and the reference-executor kernels
(options decoding, inference mode, fused == unfused) against the contract.
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow is needed for the autodiff gradient checks")

from tflite_micro.tensorflow.lite.python import schema_py_generated as schema  # noqa: E402

from tflm_train import ir  # noqa: E402
from tflm_train.errors import UserError  # noqa: E402
from tflm_train.kernels_grad import common, conv, depthwise_conv, mean, softmax_xent, train_init, update  # noqa: E402
from tflm_train.reference.quantization import activation_range, quantize_multiplier  # noqa: E402
from tflm_train.reference.registry import KERNELS  # noqa: E402
from tflm_train.schema.training_ops_generated import (ConvGradOptions, ConvUpdateOptions,  # noqa: E402
                                                       MeanGradOptions, Rounding, SgdUpdateOptions,
                                                       SoftmaxXentOptions, SplitConvOptions)

F32 = np.float32
ACT = schema.ActivationFunctionType


def assert_grad_close(actual, expected):
    """Float32 results of a different summation order: within 1e-4 of the largest |gradient|."""
    expected = np.asarray(expected, np.float64)
    assert actual.dtype == F32 and actual.shape == expected.shape
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def bits(a):
    return np.ascontiguousarray(a, F32).view(np.int32)


# ---------------------------------------------------------------- quantized layers for the gradient checks

class QuantLayer:
    """An int8 layer's tensors with chosen scales: x, the full flash weight w, an optional
    trainable slice w_train (which has drifted from w) and the bias."""

    channel_axis = 0    # of the weight's per-channel scales

    def __init__(self, rng, x_shape, w_shape, out_channels, trainable=None):
        self.x = rng.integers(-128, 128, x_shape).astype(np.int8)
        self.x_zp = int(rng.integers(-10, 11))
        self.x_scale = F32(0.02)
        self.w = rng.integers(-127, 128, w_shape).astype(np.int8)
        self.w_scale = rng.uniform(0.002, 0.01, out_channels).astype(F32)
        self.w_train = None
        if trainable is not None:
            self.w_train = rng.integers(-127, 128, w_shape[:-1] + (trainable,)).astype(np.int8)
        self.bias = rng.integers(-2000, 2000, out_channels).astype(np.int32)

    def real(self):
        """Dequantized (x, effective weight, bias) in the layer's own layouts."""
        w = common.effective_weight(self.w, self.w_train).reshape(self.w.shape)
        shape = [-1 if d == self.channel_axis else 1 for d in range(w.ndim)]
        return ((self.x.astype(np.float64) - self.x_zp) * self.x_scale,
                w * self.w_scale.astype(np.float64).reshape(shape),
                self.bias * (np.float64(self.x_scale) * self.w_scale))


class DepthwiseLayer(QuantLayer):
    channel_axis = 3


def masked_upstream(rng, pre_activation, activation):
    """(y int8 or None, act_min, act_max, dy, md): the layer's int8 output quantized from its
    float pre-activation with a scale that saturates the top, and the masked gradient."""
    y_scale = float(np.abs(pre_activation).max()) / 150
    y_zp = int(rng.integers(-20, 21))
    act_min, act_max = activation_range(activation, y_scale, y_zp)
    dy = rng.standard_normal(pre_activation.shape).astype(F32)
    if activation == ACT.NONE:
        return None, act_min, act_max, dy, dy
    y = np.clip(np.round(pre_activation / y_scale) + y_zp, act_min, act_max).astype(np.int8)
    md = np.where((y > act_min) & (y < act_max), dy, F32(0))
    assert (md == 0).any() and (md != 0).any(), "the mask should clamp some outputs and pass others"
    return y, act_min, act_max, dy, md


def tf_gradients(forward, x, w, b, md):
    """d/d(x, w, b) of sum(forward(x, w, b) * md) by TensorFlow autodiff."""
    x, w, b = (tf.constant(a, tf.float32) for a in (x, w, b))
    with tf.GradientTape() as tape:
        tape.watch([x, w, b])
        loss = tf.reduce_sum(forward(x, w, b) * md)
    return [g.numpy() for g in tape.gradient(loss, [x, w, b])]


def window_options(kernel, stride, dilation, padding, size):
    out, pad = common.resolve_padding(padding, size, kernel, stride, dilation)
    return out, dict(stride_h=stride, stride_w=stride, dilation_h=dilation, dilation_w=dilation,
                     pad_top=pad, pad_left=pad)


ACTIVATIONS = {"relu": ACT.RELU, "relu6": ACT.RELU6, "none": ACT.NONE}

# id: kernel, stride, dilation, padding, activation, input size, I, O, trainable input channels K
CONV_CASES = {
    "3x3-s1-same-relu": (3, 1, 1, "SAME", "relu", 7, 4, 6, 4),
    "3x3-s2-same-relu6-even": (3, 2, 1, "SAME", "relu6", 8, 4, 6, 4),
    "3x3-s2-valid-none": (3, 2, 1, "VALID", "none", 9, 3, 5, 3),
    "3x3-s1-valid-relu-split": (3, 1, 1, "VALID", "relu", 6, 6, 4, 2),
    "3x3-d2-same-relu": (3, 1, 2, "SAME", "relu", 7, 3, 4, 3),
    "1x1-relu6-split": (1, 1, 1, "VALID", "relu6", 5, 8, 8, 5),
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_gradients_match_tensorflow(case):
    kernel, stride, dilation, padding, act, size, channels, out_channels, trainable = case
    rng = np.random.default_rng(sum(map(ord, str(case))))
    layer = QuantLayer(rng, (1, size, size, channels), (out_channels, kernel, kernel, channels), out_channels,
                       trainable if trainable < channels else None)
    out_size, window = window_options(kernel, stride, dilation, padding, size)

    def forward(x, w, b):
        return tf.nn.conv2d(x, tf.transpose(w, (1, 2, 3, 0)), stride, padding, dilations=dilation) + b

    x, w, b = layer.real()
    pre_activation = forward(x, w, b).numpy()
    assert pre_activation.shape == (1, out_size, out_size, out_channels)
    y, act_min, act_max, dy, md = masked_upstream(rng, pre_activation, ACTIVATIONS[act])
    dx_tf, dw_tf, db_tf = tf_gradients(forward, x, w, b, md)
    mask = dict(act_min=act_min, act_max=act_max)

    dx = conv.conv_input_grad(dy, y, layer.w, layer.w_train, layer.w_scale, input_height=size, input_width=size,
                              input_channels=channels, **window, **mask)
    assert_grad_close(dx, dx_tf)
    dw = conv.conv_weight_grad(dy, y, layer.x, weight_shape=(out_channels, kernel, kernel, trainable),
                               x_zero_point=layer.x_zp, x_scale=layer.x_scale, **window, **mask)
    assert_grad_close(dw, dw_tf[..., :trainable])
    assert_grad_close(conv.bias_grad(dy, y, **mask), db_tf)


# id: kernel, stride, dilation, padding, activation, input size, C, depth multiplier M
DEPTHWISE_CASES = {
    "3x3-s1-same-m1-relu": (3, 1, 1, "SAME", "relu", 7, 4, 1),
    "3x3-s2-same-m2-relu6-even": (3, 2, 1, "SAME", "relu6", 8, 3, 2),
    "3x3-s2-valid-m2-none": (3, 2, 1, "VALID", "none", 9, 3, 2),
    "3x3-d2-same-m1-relu": (3, 1, 2, "SAME", "relu", 8, 2, 1),
}


@pytest.mark.parametrize("case", DEPTHWISE_CASES.values(), ids=DEPTHWISE_CASES.keys())
def test_depthwise_gradients_match_tensorflow(case):
    kernel, stride, dilation, padding, act, size, channels, multiplier = case
    rng = np.random.default_rng(sum(map(ord, str(case))))
    out_channels = channels * multiplier
    layer = DepthwiseLayer(rng, (1, size, size, channels), (1, kernel, kernel, out_channels), out_channels)
    out_size, window = window_options(kernel, stride, dilation, padding, size)

    def forward(x, w, b):
        # TFLite's [1, kh, kw, C*M] with o = c*M + m is TensorFlow's [kh, kw, C, M].
        w = tf.reshape(w, (kernel, kernel, channels, multiplier))
        return tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], padding, dilations=[dilation] * 2) + b

    x, w, b = layer.real()
    pre_activation = forward(x, w, b).numpy()
    assert pre_activation.shape == (1, out_size, out_size, out_channels)
    y, act_min, act_max, dy, md = masked_upstream(rng, pre_activation, ACTIVATIONS[act])
    dx_tf, dw_tf, db_tf = tf_gradients(forward, x, w, b, md)
    mask = dict(act_min=act_min, act_max=act_max)

    dx = depthwise_conv.depthwise_input_grad(dy, y, layer.w, layer.w_scale, input_height=size, input_width=size,
                                             input_channels=channels, depth_multiplier=multiplier, **window, **mask)
    assert_grad_close(dx, dx_tf)
    dw = conv.conv_weight_grad(dy, y, layer.x, weight_shape=layer.w.shape, x_zero_point=layer.x_zp,
                               x_scale=layer.x_scale, depthwise=True, depth_multiplier=multiplier, **window, **mask)
    assert_grad_close(dw, dw_tf)
    assert_grad_close(conv.bias_grad(dy, y, **mask), db_tf)


def test_fully_connected_gradients_match_tensorflow():
    """FC flattens a [1, 2, 2, 3] input; 7 of its 12 input channels are trainable."""
    rng = np.random.default_rng(7)
    inputs, outputs, trainable = 12, 5, 7
    layer = QuantLayer(rng, (1, 2, 2, 3), (outputs, inputs), outputs, trainable)

    def forward(x, w, b):
        return tf.matmul(tf.reshape(x, (1, -1)), w, transpose_b=True) + b

    x, w, b = layer.real()
    y, act_min, act_max, dy, md = masked_upstream(rng, forward(x, w, b).numpy(), ACT.RELU)
    dx_tf, dw_tf, db_tf = tf_gradients(forward, x, w, b, md)
    mask = dict(act_min=act_min, act_max=act_max)

    dx = conv.conv_input_grad(dy, y, layer.w, layer.w_train, layer.w_scale, input_height=1, input_width=1,
                              input_channels=inputs, **mask)
    assert_grad_close(dx.reshape(dx_tf.shape), dx_tf)
    dw = conv.conv_weight_grad(dy, y, layer.x, weight_shape=(outputs, trainable), x_zero_point=layer.x_zp,
                               x_scale=layer.x_scale, **mask)
    assert_grad_close(dw, dw_tf[:, :trainable])
    assert_grad_close(conv.bias_grad(dy, y, **mask), db_tf)


@pytest.mark.parametrize("pool", ["mean", "average_pool"])
def test_mean_gradient_matches_tensorflow(pool):
    rng = np.random.default_rng(3)
    height, width, channels = 5, 4, 6
    x = tf.constant(rng.standard_normal((1, height, width, channels)), tf.float32)
    dy = rng.standard_normal((1, channels)).astype(F32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if pool == "mean":
            pooled = tf.reduce_mean(x, axis=[1, 2])
        else:
            pooled = tf.reshape(tf.nn.avg_pool2d(x, (height, width), 1, "VALID"), (1, channels))
        loss = tf.reduce_sum(pooled * dy)
    assert_grad_close(mean.mean_grad(dy, input_height=height, input_width=width), tape.gradient(loss, x).numpy())


@pytest.mark.parametrize("scale, label", [(0.05, 3), (0.4, 0), (1.0, 9)])
def test_softmax_xent_matches_tensorflow(scale, label):
    """The largest scale spreads logits far enough for exp_ref to underflow to 0."""
    rng = np.random.default_rng(label)
    zero_point = -5
    logits = rng.integers(-128, 128, (1, 10)).astype(np.int8)
    z = tf.constant((logits.astype(np.float64) - zero_point) * scale, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss_tf = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=[label], logits=z)
    loss, dlogits = softmax_xent.softmax_xent(logits, label, logits_scale=scale, logits_zero_point=zero_point)
    assert loss.dtype == F32 and dlogits.shape == logits.shape
    assert_grad_close(dlogits, tape.gradient(loss_tf, z).numpy())
    np.testing.assert_allclose(loss, loss_tf.numpy()[0], rtol=1e-5)


def test_softmax_xent_rejects_label_out_of_range():
    with pytest.raises(UserError, match="label 10"):
        softmax_xent.softmax_xent(np.zeros(10, np.int8), 10, logits_scale=0.1, logits_zero_point=0)


# ---------------------------------------------------------------- float evaluation order, bit for bit

def contract_input_grad(g, w, height, width, channels, g_of, sh, sw, dh, dw, pt, pl):
    """TFLT_CONV/DEPTHWISE_INPUT_GRAD's loops transcribed one scalar float32 operation at a time;
    g_of(i) lists the (weight index, o) pairs the innermost loop visits in order."""
    out_h, out_w = g.shape[:2]
    dx = np.zeros((height, width, channels), F32)
    for ih, iw, i in np.ndindex(height, width, channels):
        acc = F32(0)
        for kh, kw in np.ndindex(*w.shape[1:3]):
            oh, rh = divmod(ih + pt - kh * dh, sh)
            ow, rw = divmod(iw + pl - kw * dw, sw)
            if rh == 0 and rw == 0 and 0 <= oh < out_h and 0 <= ow < out_w:
                for (wo, wi), o in g_of(i):
                    acc = acc + F32(w[wo, kh, kw, wi]) * g[oh, ow, o]
        dx[ih, iw, i] = acc
    return dx


def contract_weight_grad(md, x, shape, x_of, sh, sw, dh, dw, pt, pl, x_zp, x_scale):
    """The weight gradient's sums transcribed per element; x_of(index) is the (o, input channel) of a
    weight element."""
    dw_ = np.zeros(shape, F32)
    for index in np.ndindex(*shape):
        o, i = x_of(index)
        acc = F32(0)
        for oh, ow in np.ndindex(*md.shape[:2]):
            ih, iw = oh * sh - pt + index[1] * dh, ow * sw - pl + index[2] * dw
            if 0 <= ih < x.shape[0] and 0 <= iw < x.shape[1]:
                acc = acc + md[oh, ow, o] * F32(int(x[ih, iw, i]) - x_zp)
        dw_[index] = acc * x_scale
    return dw_


@pytest.mark.parametrize("stride, dilation, pad", [(2, 1, 1), (1, 2, 2), (2, 1, 0)])
def test_vectorised_sums_keep_the_contract_order(stride, dilation, pad):
    rng = np.random.default_rng(stride * 10 + dilation)
    size, channels, out_channels, trainable, multiplier = 7, 3, 4, 2, 2
    out = (size + 2 * pad - 2 * dilation - 1) // stride + 1
    geometry = dict(stride_h=stride, stride_w=stride, dilation_h=dilation, dilation_w=dilation, pad_top=pad,
                    pad_left=pad)
    loops = (stride, stride, dilation, dilation, pad, pad)
    x = rng.integers(-128, 128, (1, size, size, channels)).astype(np.int8)
    x_zp, x_scale = 5, F32(0.037)

    def spread(channels_out):
        # Values spanning many binades make any reordering of a sum visible in the low bits.
        return (rng.standard_normal((out, out, channels_out)) * 10.0 ** rng.integers(-3, 4, (out, out, 1))).astype(F32)

    g = spread(out_channels)
    w_scale = np.ones(out_channels, F32)

    w = rng.integers(-127, 128, (out_channels, 3, 3, channels)).astype(np.int8)
    dx = conv.conv_input_grad(g[None], None, w, None, w_scale, input_height=size, input_width=size,
                              input_channels=channels, **geometry)
    expected = contract_input_grad(g, w, size, size, channels, lambda i: [((o, i), o) for o in range(out_channels)],
                                   *loops)
    assert (bits(dx[0]) == bits(expected)).all()
    dw = conv.conv_weight_grad(g[None], None, x, weight_shape=(out_channels, 3, 3, trainable), x_zero_point=x_zp,
                               x_scale=x_scale, **geometry)
    expected = contract_weight_grad(g, x[0], (out_channels, 3, 3, trainable), lambda e: (e[0], e[3]), *loops,
                                    x_zp, x_scale)
    assert (bits(dw) == bits(expected)).all()

    gd = spread(channels * multiplier)
    wd = rng.integers(-127, 128, (1, 3, 3, channels * multiplier)).astype(np.int8)
    dx = depthwise_conv.depthwise_input_grad(gd[None], None, wd, np.ones(channels * multiplier, F32),
                                             input_height=size, input_width=size, input_channels=channels,
                                             depth_multiplier=multiplier, **geometry)
    expected = contract_input_grad(gd, wd, size, size, channels,
                                   lambda i: [((0, i * multiplier + j), i * multiplier + j) for j in range(multiplier)],
                                   *loops)
    assert (bits(dx[0]) == bits(expected)).all()
    dw = conv.conv_weight_grad(gd[None], None, x, weight_shape=wd.shape, x_zero_point=x_zp, x_scale=x_scale,
                               depthwise=True, depth_multiplier=multiplier, **geometry)
    expected = contract_weight_grad(gd, x[0], wd.shape, lambda e: (e[3], e[3] // multiplier), *loops, x_zp, x_scale)
    assert (bits(dw) == bits(expected)).all()


@pytest.mark.parametrize("depthwise", [False, True])
def test_input_grad_with_the_pad_folded_in_equals_the_sliced_padded_grad(depthwise):
    """The converter folds PAD's SLICE into the input-gradient op (kernels_grad/pad.py): same bits."""
    rng = np.random.default_rng(3)
    size, channels, (top, bottom, left, right), stride, k = 8, 3, (3, 2, 1, 0), 2, 5
    padded_h, padded_w = size + top + bottom, size + left + right
    out_h, out_w = (padded_h - k) // stride + 1, (padded_w - k) // stride + 1
    out_channels = channels if depthwise else 4
    g = (rng.standard_normal((1, out_h, out_w, out_channels)) * 10.0 ** rng.integers(-3, 4, (1, out_h, out_w, 1))
         ).astype(F32)
    w_scale = rng.uniform(0.5, 2, out_channels).astype(F32)
    w = rng.integers(-127, 128, (1, k, k, channels) if depthwise else (out_channels, k, k, channels)).astype(np.int8)

    def input_grad(pad_top, pad_left, height, width):
        common = dict(stride_h=stride, stride_w=stride, pad_top=pad_top, pad_left=pad_left, input_height=height,
                      input_width=width, input_channels=channels)
        if depthwise:
            return depthwise_conv.depthwise_input_grad(g, None, w, w_scale, **common)
        return conv.conv_input_grad(g, None, w, None, w_scale, **common)

    sliced = input_grad(0, 0, padded_h, padded_w)[:, top:top + size, left:left + size]
    assert (bits(input_grad(top, left, size, size)) == bits(sliced)).all()


# ---------------------------------------------------------------- exp_ref and the activation mask

def test_exp_ref_accuracy_and_range():
    """The contract's degree-6 polynomial truncates at |r| <= ln2/2 with a relative error up to
    r^7/7! = 1.2e-7, plus float32 rounding: about 2 ulp at worst, well under 1 ulp on average."""
    x = np.concatenate([np.linspace(-87, 0, 400001, dtype=F32), F32([-87.0, -1e-30, 0.0])])
    exact = np.exp(x.astype(np.float64))
    relative = np.abs(common.exp_ref(x).astype(np.float64) - exact) / exact
    assert relative.max() < 3e-7
    assert relative.mean() < 6e-8
    assert common.exp_ref(F32(0.0)) == 1.0
    assert (common.exp_ref(F32([-87.01, -100.0, -np.inf])) == 0).all()


def test_activation_mask_passes_only_unclamped_outputs():
    dy = np.arange(1, 7, dtype=F32).reshape(1, 2, 3)
    y = np.int8([-128, -10, -9, 0, 50, 51]).reshape(1, 2, 3)
    assert common.activation_mask(dy, y, -10, 51).tolist() == [[[0, 0, 3], [4, 5, 0]]]
    assert (common.activation_mask(dy, None, -10, 51) == dy).all()


# ---------------------------------------------------------------- QAS update rule

def python_hash32(x):
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash32_and_uniform_draw_follow_the_contract():
    values = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
    assert common.hash32(values).tolist() == [python_hash32(v) for v in values]
    param_id, step = 17, -3   # state[1] after wrapping: hashed as uint32
    index = np.arange(50)
    h = [python_hash32(python_hash32(python_hash32(param_id) ^ (step & 0xFFFFFFFF)) ^ e) for e in index]
    assert common.stochastic_u(param_id, step, index).tolist() == [F32(v >> 8) * F32(2.0 ** -24) for v in h]


def test_nearest_update_of_int8_weights():
    rng = np.random.default_rng(11)
    old = rng.integers(-127, 128, (4, 3, 3, 2)).astype(np.int8)
    grad = (rng.standard_normal(old.shape) * 3).astype(F32)
    grad[0, 0, 0, 0], grad[1, 0, 0, 0], grad[2, 0, 0, 0] = np.nan, np.inf, -1e30
    qas = F32([100.0, 50.0, 0.0, 400.0])   # channel 2 is dead: frozen
    lr = F32(0.5)
    param = old.copy()
    update.sgd_update(grad, param, qas, lr, step=5, rounding=Rounding.NEAREST, param_id=1, channel_axis=0)

    steps = np.floor((grad * qas[:, None, None, None]) * lr + F32(0.5))
    expected = np.clip(old - np.clip(np.nan_to_num(steps), -255, 255), -127, 127)
    expected[0, 0, 0, 0] = old[0, 0, 0, 0]            # NaN: no change
    assert param.tolist() == expected.astype(np.int8).tolist()
    assert param[1, 0, 0, 0] == max(-127, int(old[1, 0, 0, 0]) - 255) and (param[2] == old[2]).all()
    assert (param != old).mean() > 0.5


def test_nearest_update_of_int32_bias_saturates():
    old = np.int32([2 ** 31 - 5, -2 ** 31 + 5, 1000, 7])
    grad = F32([-1e20, 1e20, 2.6, 1.4])
    param = old.copy()
    update.sgd_update(grad, param, F32([1.0, 1.0, 1.0, 1.0]), F32(1.0), 1, rounding=Rounding.NEAREST, param_id=0)
    assert param.tolist() == [2 ** 31 - 1, -2 ** 31, 997, 6]


def test_fractional_weights_accumulate_steps_below_one_lsb():
    """A step of 0.3 LSB: nearest rounding alone never moves the weight; with fractional bits
    ten steps move it by 3 and carry the remaining 0.0117 LSB (3/256) in the fraction."""
    grad, qas = np.full(4, F32(0.3)), np.ones(4, F32)
    plain = np.int8([5, -5, 126, -126])
    weight, fraction = plain.copy(), np.zeros(4, np.int8)
    for step in range(1, 11):
        update.sgd_update(grad, plain, qas, F32(1.0), step, rounding=Rounding.NEAREST)
        update.sgd_update(grad, weight, qas, F32(1.0), step, rounding=Rounding.NEAREST, fraction=fraction)
    assert plain.tolist() == [5, -5, 126, -126]
    # 0.3 LSB = 76.8/256 -> 77 per step; -770/256: 3 LSB down, remainder -2 (1/256 LSB); -127 clamps.
    assert weight.tolist() == [2, -8, 123, -127]
    assert fraction.tolist() == [-2, -2, -2, 0]


def test_fractional_weights_keep_the_master_value_in_range():
    rng = np.random.default_rng(12)
    weight = rng.integers(-127, 128, 4096).astype(np.int8)
    fraction = rng.integers(-128, 128, 4096).astype(np.int8)
    grad = (rng.standard_normal(4096) * 100).astype(F32)
    grad[:3] = [np.nan, np.inf, -np.inf]
    master = weight.astype(np.int64) * 256 + fraction
    old_weight, old_fraction = weight.copy(), fraction.copy()
    update.sgd_update(grad, weight, np.ones(4096, F32), F32(1.0), 3, rounding=Rounding.STOCHASTIC, param_id=1,
                      fraction=fraction)
    new_master = weight.astype(np.int64) * 256 + fraction
    assert weight[0] == old_weight[0] and fraction[0] == old_fraction[0]      # NaN: unchanged
    assert new_master[1] == max(-127 * 256, master[1] - 255 * 256)            # +inf: the largest step
    assert new_master[2] == min(127 * 256, master[2] + 255 * 256)
    assert np.abs(new_master).max() <= 127 * 256 and np.abs(weight).max() <= 127
    # The weight is the master value rounded to nearest, ties up.
    assert (weight == np.floor((new_master + 128) / 256)).all()
    assert (np.abs(new_master[3:] - (master[3:] - np.floor(grad[3:].astype(np.float64) * 256))) <= 1).mean() > 0.5


def test_fractional_bits_need_an_int8_weight():
    with pytest.raises(ValueError, match="fractional bits"):
        update.sgd_update(F32([1.0]), np.int32([0]), F32([1.0]), F32(1.0), 1, fraction=np.int8([0]))


def test_stochastic_rounding_is_deterministic_per_param_step_and_index():
    rng = np.random.default_rng(5)
    old = rng.integers(-100, 100, (8, 1, 1, 16)).astype(np.int8)
    grad = rng.standard_normal(old.shape).astype(F32)

    def updated(param_id, step):
        param = old.copy()
        update.sgd_update(grad, param, np.full(8, 10.0, F32), F32(0.1), step, rounding=Rounding.STOCHASTIC,
                          param_id=param_id, channel_axis=0)
        return param

    assert (updated(3, 7) == updated(3, 7)).all()
    assert (updated(3, 7) != updated(3, 8)).any()
    assert (updated(3, 7) != updated(4, 7)).any()


def test_stochastic_rounding_is_unbiased():
    rng = np.random.default_rng(9)
    size = 200_000
    steps = rng.uniform(-3, 3, size).astype(F32)
    param = np.zeros(size, np.int32)
    update.sgd_update(steps, param, np.ones(size, F32), F32(1.0), 42, rounding=Rounding.STOCHASTIC, param_id=2)
    rounded = -param.astype(np.float64)
    assert set(np.unique(rounded - np.floor(steps))) == {0.0, 1.0}
    assert abs((rounded - steps).mean()) < 0.005
    # One element over many training steps: the long-run average of its update is the exact step.
    draws = [common.rounded_step(F32(0.3), F32(1.0), F32(1.0), rounding=Rounding.STOCHASTIC, param_id=2,
                                 step=s, index=np.array(17)) for s in range(1, 20001)]
    assert abs(np.mean(draws) - 0.3) < 0.015


# ---------------------------------------------------------------- reference-executor kernels

def custom_op(kind, options, outputs=()):
    return ir.Op(kind, [], [ir.Tensor(f"out{i}", shape, dtype) for i, (shape, dtype) in enumerate(outputs)],
                 custom_options=options.to_bytes(), custom=True)


def update_case(rng, depthwise):
    """Inputs of a 3×3 stride-2 SAME conv (split: 3 of 5 input channels trainable) or depthwise (M=2) layer."""
    if depthwise:
        x = rng.integers(-128, 128, (1, 6, 6, 3)).astype(np.int8)
        w_train = rng.integers(-127, 128, (1, 3, 3, 6)).astype(np.int8)
    else:
        x = rng.integers(-128, 128, (1, 6, 6, 5)).astype(np.int8)
        w_train = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    out_channels = w_train.shape[3] if depthwise else w_train.shape[0]
    y = rng.integers(-128, 128, (1, 3, 3, out_channels)).astype(np.int8)
    dy = rng.standard_normal(y.shape).astype(F32)
    w_qas = rng.uniform(100, 300, out_channels).astype(F32)
    b_qas = rng.uniform(1e3, 1e4, out_channels).astype(F32)
    b_train = rng.integers(-3000, 3000, out_channels).astype(np.int32)
    return dict(x=x, y=y, dy=dy, w_train=w_train, w_qas=w_qas, b_train=b_train, b_qas=b_qas)


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("rounding", [Rounding.NEAREST, Rounding.STOCHASTIC], ids=["nearest", "stochastic"])
def test_fused_update_equals_gradients_then_sgd(depthwise, rounding):
    t = update_case(np.random.default_rng(int(depthwise) * 2 + int(rounding)), depthwise)
    label, lr, state = np.int32([1]), F32([0.05]), np.int32([1, 9])
    options = ConvUpdateOptions(stride_h=2, stride_w=2, pad_top=0, pad_left=0, x_zero_point=-3, x_scale=0.03,
                                act_min=-100, act_max=110, depthwise=depthwise,
                                depth_multiplier=2 if depthwise else 1, rounding=rounding,
                                weight_param_id=6, bias_param_id=7)
    w_fused, b_fused = t["w_train"].copy(), t["b_train"].copy()
    KERNELS["TFLT_CONV_GRAD_UPDATE"](custom_op("TFLT_CONV_GRAD_UPDATE", options), [
        label, lr, state, t["dy"], t["y"], t["x"], w_fused, t["w_qas"], b_fused, t["b_qas"]])

    dw, = KERNELS["TFLT_CONV_WEIGHT_GRAD"](custom_op("TFLT_CONV_WEIGHT_GRAD", options, [(t["w_train"].shape, F32)]),
                                           [label, t["dy"], t["y"], t["x"]])
    db, = KERNELS["TFLT_BIAS_GRAD"](custom_op("TFLT_BIAS_GRAD", options, [(t["b_train"].shape, F32)]),
                                    [label, t["dy"], t["y"]])
    w_unfused, b_unfused = t["w_train"].copy(), t["b_train"].copy()
    for grad, param, qas, param_id, axis in ((dw, w_unfused, t["w_qas"], 6, 3 if depthwise else 0),
                                             (db, b_unfused, t["b_qas"], 7, 0)):
        sgd = SgdUpdateOptions(rounding=rounding, param_id=param_id, channel_axis=axis)
        KERNELS["TFLT_SGD_UPDATE"](custom_op("TFLT_SGD_UPDATE", sgd), [label, lr, state, grad, param, qas])

    assert (w_fused != t["w_train"]).mean() > 0.3 and (b_fused != t["b_train"]).mean() > 0.3
    assert w_fused.tolist() == w_unfused.tolist()
    assert b_fused.tolist() == b_unfused.tolist()


def test_inference_mode_changes_nothing():
    t = update_case(np.random.default_rng(1), depthwise=False)
    label, lr, state = np.int32([-1]), F32([0.05]), np.int32([1, 9])
    w, b = t["w_train"].copy(), t["b_train"].copy()
    KERNELS["TFLT_CONV_GRAD_UPDATE"](custom_op("TFLT_CONV_GRAD_UPDATE", ConvUpdateOptions(x_scale=0.1)), [
        label, lr, state, t["dy"], t["y"], t["x"], w, t["w_qas"], b, t["b_qas"]])
    KERNELS["TFLT_SGD_UPDATE"](custom_op("TFLT_SGD_UPDATE", SgdUpdateOptions()),
                               [label, lr, state, np.ones(b.shape, F32), b, t["b_qas"]])
    assert (w == t["w_train"]).all() and (b == t["b_train"]).all()

    loss, dlogits = KERNELS["TFLT_SOFTMAX_XENT"](
        custom_op("TFLT_SOFTMAX_XENT", SoftmaxXentOptions(logits_scale=0.1), [((1,), F32), ((1, 10), F32)]),
        [np.ones((1, 10), np.int8), label])
    assert loss.tolist() == [0.0] and dlogits.shape == (1, 10)
    dx, = KERNELS["TFLT_MEAN_GRAD"](
        custom_op("TFLT_MEAN_GRAD", MeanGradOptions(input_height=2, input_width=2), [((1, 2, 2, 4), F32)]),
        [label, np.ones((1, 4), F32)])
    assert dx.shape == (1, 2, 2, 4)


def test_train_init_seeds_variables_once_and_counts_training_steps():
    src = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    dst = np.zeros((2, 3, 3), np.int8)
    state = np.int32([0, 0])
    op = ir.Op("TFLT_TRAIN_INIT", [], [], custom=True)
    KERNELS["TFLT_TRAIN_INIT"](op, [np.int32([-1]), state, src, dst])
    assert state.tolist() == [1, 0] and (dst == src[..., :3]).all()
    dst[...] = 0
    KERNELS["TFLT_TRAIN_INIT"](op, [np.int32([2]), state, src, dst])
    assert state.tolist() == [1, 1] and (dst == 0).all()
    state[1] = 2 ** 31 - 1
    train_init.train_init(0, state, [(src, dst)])
    assert state.tolist() == [1, -2 ** 31]


def test_backward_kernels_decode_their_options():
    rng = np.random.default_rng(4)
    layer = QuantLayer(rng, (1, 5, 5, 3), (4, 3, 3, 3), 4)
    dy = rng.standard_normal((1, 3, 3, 4)).astype(F32)
    y = rng.integers(-128, 128, dy.shape).astype(np.int8)
    geometry = dict(stride_h=2, stride_w=2, pad_top=1, pad_left=1)
    options = ConvGradOptions(input_height=5, input_width=5, input_channels=3, act_min=-50, act_max=60, **geometry)
    dx, = KERNELS["TFLT_CONV_INPUT_GRAD"](custom_op("TFLT_CONV_INPUT_GRAD", options, [((1, 5, 5, 3), F32)]),
                                          [np.int32([0]), dy, y, layer.w, None, layer.w_scale])
    expected = conv.conv_input_grad(dy, y, layer.w, None, layer.w_scale, input_height=5, input_width=5,
                                    input_channels=3, act_min=-50, act_max=60, **geometry)
    assert (bits(dx) == bits(expected)).all()
    with pytest.raises(UserError, match="TFLT_CONV_INPUT_GRAD"):
        bad = ir.Op("TFLT_CONV_INPUT_GRAD", [], [ir.Tensor("dx", (1, 5, 5, 3), F32)], custom_options=b"\x05\x00",
                    custom=True)
        KERNELS["TFLT_CONV_INPUT_GRAD"](bad, [np.int32([0]), dy, y, layer.w, None, layer.w_scale])


# ---------------------------------------------------------------- split conv against TFLite

@pytest.fixture(scope="module")
def int8_conv_model():
    """A full-int8 Keras → TFLite model: 3×3 s1 SAME ReLU, 3×3 s2 VALID ReLU6, 1×1, FC."""
    rng = np.random.default_rng(0)
    inputs = tf.keras.Input((10, 10, 4), batch_size=1)
    h = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(8, 3, strides=2, padding="valid", activation="relu6")(h)
    h = tf.keras.layers.Conv2D(6, 1)(h)
    outputs = tf.keras.layers.Dense(4)(tf.keras.layers.Flatten()(h))
    model = tf.keras.Model(inputs, outputs)
    for layer in model.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.3, bias.shape).astype(F32)])

    def representative():
        for _ in range(16):
            yield [rng.normal(0, 1, (1, 10, 10, 4)).astype(F32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model_bytes = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                                      experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                           rng.integers(-128, 128, (1, 10, 10, 4)).astype(np.int8))
    interpreter.invoke()
    return ir.load(model_bytes), interpreter


def split_conv_inputs(graph, op):
    """TFLT_CONV_2D_SPLIT's options and rescale inputs for a CONV_2D / FULLY_CONNECTED op."""
    x, w, bias = op.inputs
    y = op.outputs[0]
    out_channels = w.shape[0]
    w_scales = np.broadcast_to(w.quant.scale, (out_channels,))
    rescale = [quantize_multiplier(float(x.quant.scale[0]) * float(s) / float(y.quant.scale[0])) for s in w_scales]
    act_min, act_max = activation_range(op.options.fusedActivationFunction, y.quant.scale[0],
                                        int(y.quant.zero_point[0]))
    options = dict(x_zero_point=int(x.quant.zero_point[0]), y_zero_point=int(y.quant.zero_point[0]),
                   act_min=act_min, act_max=act_max)
    if op.kind == "CONV_2D":
        o = op.options
        kernel_h, kernel_w = w.shape[1:3]
        _, pad_top = common.resolve_padding("SAME" if o.padding == schema.Padding.SAME else "VALID", x.shape[1],
                                            kernel_h, o.strideH, o.dilationHFactor)
        _, pad_left = common.resolve_padding("SAME" if o.padding == schema.Padding.SAME else "VALID", x.shape[2],
                                             kernel_w, o.strideW, o.dilationWFactor)
        options.update(stride_h=o.strideH, stride_w=o.strideW, dilation_h=o.dilationHFactor,
                       dilation_w=o.dilationWFactor, pad_top=pad_top, pad_left=pad_left)
    multiplier = np.int32([m for m, _ in rescale])
    shift = np.int32([s for _, s in rescale])
    return options, multiplier, shift


def test_split_conv_is_bit_identical_to_tflite(int8_conv_model):
    graph, interpreter = int8_conv_model
    index = {id(t): i for i, t in enumerate(graph.tensors)}
    layers = [op for op in graph.ops if op.kind in ("CONV_2D", "FULLY_CONNECTED")]
    assert [op.kind for op in layers] == ["CONV_2D"] * 3 + ["FULLY_CONNECTED"]
    for op in layers:
        x_tensor, w_tensor, bias_tensor = op.inputs
        x = interpreter.get_tensor(index[id(x_tensor)])
        expected = interpreter.get_tensor(index[id(op.outputs[0])])
        options, multiplier, shift = split_conv_inputs(graph, op)
        w = w_tensor.data
        w_train = w[..., :max(1, w.shape[-1] // 2)].copy()   # the trainable slice, here still equal to flash
        split_op = ir.Op("TFLT_CONV_2D_SPLIT", [], [op.outputs[0]], custom=True,
                         custom_options=SplitConvOptions(**options).to_bytes())
        y, = KERNELS["TFLT_CONV_2D_SPLIT"](split_op, [x, w, w_train, bias_tensor.data, multiplier, shift])
        assert y.dtype == np.int8 and y.shape == expected.shape
        assert (y == expected).all(), op
        assert len(np.unique(y)) > 3   # a meaningful comparison, not a saturated layer


def test_split_conv_takes_trainable_channels_from_w_train():
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (1, 4, 4, 5)).astype(np.int8)
    w = rng.integers(-127, 128, (3, 3, 3, 5)).astype(np.int8)
    w_train = rng.integers(-127, 128, (3, 3, 3, 2)).astype(np.int8)
    merged = np.concatenate([w_train, w[..., 2:]], axis=-1)
    kwargs = dict(multiplier=np.full(3, 1 << 30, np.int32), shift=np.full(3, -9, np.int32), output_height=4,
                  output_width=4, pad_top=1, pad_left=1, x_zero_point=3, y_zero_point=-2)
    split = conv.conv2d_split(x, w, w_train, None, **kwargs)
    assert (split == conv.conv2d_split(x, merged, None, None, **kwargs)).all()
    assert (split != conv.conv2d_split(x, w, None, None, **kwargs)).any()
