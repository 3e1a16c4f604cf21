"""Small int8 classifiers built with TensorFlow for converter tests (TF runs in the pytest process only)."""
import numpy as np


def quantize(model, input_shape, seed=0) -> bytes:
    import tensorflow as tf

    def representative():
        rng = np.random.default_rng(seed)
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1,) + tuple(input_shape)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def mobilenet_like(residual=False, pad=False, classes=4, size=12, seed=0, pool="mean") -> bytes:
    """conv(s2) [→ pad] → dw → pw [→ dw → pw + residual] → global pool → dense → softmax.

    pool="mean" gives MEAN; pool="avgpool" gives AVERAGE_POOL_2D + RESHAPE (flatten).
    """
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inp = tf.keras.Input((size, size, 3), batch_size=1)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inp)
    if pad:
        x = layers.ZeroPadding2D(2)(x)  # not foldable into SAME, so a PAD op stays
    x = layers.DepthwiseConv2D(3, padding="valid" if pad else "same", activation="relu6")(x)
    x = layers.Conv2D(12, 1, activation="relu6")(x)
    if residual:
        y = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
        y = layers.Conv2D(12, 1)(y)
        x = layers.Add()([x, y])
    if pool == "mean":
        x = layers.GlobalAveragePooling2D()(x)
    else:
        x = layers.Flatten()(layers.AveragePooling2D(x.shape[1])(x))
    x = layers.Dense(classes)(x)
    return quantize(tf.keras.Model(inp, layers.Softmax()(x)), (size, size, 3), seed)


def float_model() -> bytes:
    import tensorflow as tf
    inp = tf.keras.Input((8, 8, 1), batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3)(inp)
    x = tf.keras.layers.Flatten()(x)
    out = tf.keras.layers.Softmax()(tf.keras.layers.Dense(2)(x))
    return tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert()


def with_max_pool() -> bytes:
    """A layer kind without a gradient rule between a trainable layer and the logits."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    inp = tf.keras.Input((8, 8, 3), batch_size=1)
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    return quantize(tf.keras.Model(inp, layers.Softmax()(layers.Dense(3)(x))), (8, 8, 3))
