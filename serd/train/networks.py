"""The two networks: the study's baseline and the int8-friendly one serd ships.

Input: one window's log-mel features as (n_mels, n_frames, 1); output: logits
(no softmax: the runtime applies softmax(logits / temperature) so that the
calibration temperature lives in the sidecar, not in the graph).
"""

from __future__ import annotations

NETWORKS = ("serd_cnn", "serd_cnn_wide", "study")


def build(name: str, input_shape: tuple[int, int], n_classes: int, batch_size: int | None = None):
    """A compiled-ready Keras model; `batch_size=1` gives the fixed-batch export graph."""
    if name == "serd_cnn":
        return serd_cnn(input_shape, n_classes, batch_size)
    if name == "serd_cnn_wide":
        return serd_cnn(input_shape, n_classes, batch_size, widths=(32, 64, 128, 256), name="serd_cnn_wide")
    if name == "study":
        return study_baseline(input_shape, n_classes, batch_size)
    raise ValueError(f"unknown network {name!r}; expected one of {NETWORKS}")


def study_baseline(input_shape: tuple[int, int], n_classes: int, batch_size: int | None = None):
    """The original study's CNN: 4 x (Conv2D, BatchNorm, ELU, MaxPool, Dropout), Flatten, Dense.

    Kept as a named baseline. Not shipped: the TFLite converter leaves ELU in
    float, and an open-batch Flatten disables XNNPACK in tflite-runtime 2.14.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(*input_shape, 1), batch_size=batch_size, name="features")
    x = inputs
    for filters in (16, 32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ELU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="study")


def serd_cnn(input_shape: tuple[int, int], n_classes: int, batch_size: int | None = None,
             widths: tuple[int, int, int, int] = (16, 32, 64, 128), name: str = "serd_cnn"):
    """The shipped network: every op full-int8 in TFLite (Conv/ReLU/pool/reshape/dense).

    A strided first convolution and early pooling keep it near 11 M
    multiply-adds per window; pooling over time only at the end keeps the
    frequency layout (pitch and spectral tilt carry emotion) for the classifier.
    """
    import keras
    from keras import layers

    n_mels, n_frames = input_shape
    inputs = keras.Input(shape=(n_mels, n_frames, 1), batch_size=batch_size, name="features")
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(2)(x)
    for filters in widths[1:]:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        if filters != widths[-1]:
            x = layers.MaxPooling2D(2)(x)
        x = layers.SpatialDropout2D(0.1)(x)
    # Average over time only: (freq, 1, channels) keeps where in frequency energy sits.
    freq_bins, time_steps = x.shape[1], x.shape[2]
    x = layers.AveragePooling2D(pool_size=(1, time_steps))(x)
    x = layers.Reshape((freq_bins * x.shape[3],))(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
