"""The two networks: the study's baseline and the int8-friendly one serd ships.

Input: one window's log-mel features as (n_mels, n_frames, 1); output: logits
(no softmax: the runtime applies softmax(logits / temperature) so that the
calibration temperature lives in the sidecar, not in the graph).
"""

from __future__ import annotations

NETWORKS = ("serd_cnn", "serd_cnn_wide", "study")
AROUSAL_HEAD = "arousal"
"""The arousal head's layer name (`fit.keras_clip_scores` finds the head by it)."""
TRAINING_ONLY_LAYERS = (AROUSAL_HEAD, "corpus_hidden", "corpus")
"""Layers the export graph leaves out (Keras may order their weights before the emotions')."""


def build(name: str, input_shape: tuple[int, int], n_classes: int, batch_size: int | None = None,
          mixstyle_p: float = 0.0, arousal_head: bool = False, corpus_adversary: tuple[int, float] | None = None):
    """A compiled-ready Keras model; `batch_size=1` gives the fixed-batch export graph.

    `mixstyle_p`, `arousal_head` and `corpus_adversary` shape the training graph only (see
    `serd_cnn`); the export graph is built without them and takes the other layers' weights in order.
    """
    parts = {"mixstyle_p": mixstyle_p, "arousal_head": arousal_head, "corpus_adversary": corpus_adversary}
    if name == "serd_cnn":
        return serd_cnn(input_shape, n_classes, batch_size, **parts)
    if name == "serd_cnn_wide":
        return serd_cnn(input_shape, n_classes, batch_size, widths=(32, 64, 128, 256), name="serd_cnn_wide", **parts)
    if mixstyle_p or arousal_head or corpus_adversary:
        raise ValueError(f"{name} takes no training-only parts (MixStyle, an arousal head, a corpus adversary)")
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
             widths: tuple[int, int, int, int] = (16, 32, 64, 128), name: str = "serd_cnn",
             mixstyle_p: float = 0.0, arousal_head: bool = False,
             corpus_adversary: tuple[int, float] | None = None):
    """The shipped network: every op full-int8 in TFLite (Conv/ReLU/pool/reshape/dense).

    A strided first convolution and early pooling keep it near 11 M
    multiply-adds per window; pooling over time only at the end keeps the
    frequency layout (pitch and spectral tilt carry emotion) for the classifier.

    Training-only parts: `mixstyle_p` > 0 mixes the first two blocks' feature statistics
    between windows (`MixStyle`); `arousal_head` adds one more logit (activated against
    calm) after the emotion logits, trained by `fit.emotion_loss` and left out of the export;
    `corpus_adversary` = (corpora, strength) adds a corpus classifier behind a gradient reversal
    (DANN, Ganin et al. 2016): its logits come last, and the features are pushed, at `strength`,
    away from whatever tells the training corpora apart.
    """
    import keras
    from keras import layers

    n_mels, n_frames = input_shape
    inputs = keras.Input(shape=(n_mels, n_frames, 1), batch_size=batch_size, name="features")
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(2)(x)
    if mixstyle_p:
        x = mix_style_layer(mixstyle_p)(x)
    for block, filters in enumerate(widths[1:]):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        if filters != widths[-1]:
            x = layers.MaxPooling2D(2)(x)
        x = layers.SpatialDropout2D(0.1)(x)
        if mixstyle_p and block == 0:
            x = mix_style_layer(mixstyle_p)(x)
    # Average over time only: (freq, 1, channels) keeps where in frequency energy sits.
    freq_bins, time_steps = x.shape[1], x.shape[2]
    x = layers.AveragePooling2D(pool_size=(1, time_steps))(x)
    x = layers.Reshape((freq_bins * x.shape[3],))(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    if arousal_head:
        # Named, like the adversary's layers, so that the export graph (without them) takes the
        # other layers' weights (`export.to_tflite` checks the outputs agree).
        outputs = layers.Concatenate()([outputs, layers.Dense(1, name=AROUSAL_HEAD)(x)])
    if corpus_adversary:
        n_corpora, strength = corpus_adversary
        hidden = layers.Dense(64, activation="relu", name="corpus_hidden")(gradient_reversal_layer(strength)(x))
        outputs = layers.Concatenate()([outputs, layers.Dense(n_corpora, name="corpus")(hidden)])
    return keras.Model(inputs, outputs, name=name)


def gradient_reversal_layer(strength: float):
    """Identity going forward; going back, the gradient times -`strength`.

    The corpus classifier behind it learns to tell the corpora apart, and the features in
    front of it learn, at `strength`, to make that harder: what a microphone, language or
    recording room sets is what an unfamiliar corpus changes, so it should not carry the emotion.
    """
    import keras
    import tensorflow as tf

    @tf.custom_gradient
    def reverse(x):
        return tf.identity(x), lambda upstream: -strength * upstream

    class GradientReversal(keras.layers.Layer):
        def call(self, x):
            return reverse(x)

    return GradientReversal()


def mix_style_layer(p: float, alpha: float = 0.1):
    """MixStyle (Zhou et al., ICLR 2021): on a share `p` of training windows, swap part of each
    channel's mean and spread over (frequency, time) for another window's in the batch.

    Those statistics carry the microphone, the room and the corpus more than the emotion, so
    mixing them across windows of different corpora asks the network not to lean on them.
    Identity outside training; no weights.
    """
    import keras

    class MixStyle(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator()  # fresh draws every step

        def call(self, x, training=None):
            if not training:
                return x
            ops = keras.ops
            batch = ops.shape(x)[0]
            mean = ops.stop_gradient(ops.mean(x, axis=(1, 2), keepdims=True))
            std = ops.stop_gradient(ops.sqrt(ops.var(x, axis=(1, 2), keepdims=True) + 1e-6))
            partner = keras.random.shuffle(ops.arange(batch), seed=self.seed_generator)
            lam = keras.random.beta((batch, 1, 1, 1), alpha, alpha, seed=self.seed_generator)
            mixed_mean = lam * mean + (1.0 - lam) * ops.take(mean, partner, axis=0)
            mixed_std = lam * std + (1.0 - lam) * ops.take(std, partner, axis=0)
            mixed = (x - mean) / std * mixed_std + mixed_mean
            apply = ops.cast(keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < p, x.dtype)
            return apply * mixed + (1.0 - apply) * x

    return MixStyle()
