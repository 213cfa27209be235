"""Training, export and evaluation. TensorFlow and librosa live only here (the `train` extra)."""
