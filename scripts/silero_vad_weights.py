"""Write Silero VAD's 16 kHz weights from its ONNX model into a .safetensors file serd's numpy port reads.

    pip download --no-deps silero-vad==6.2.3 -d /tmp/silero && unzip -o /tmp/silero/silero_vad-*.whl -d /tmp/silero
    pip install onnx   # only for this script
    python scripts/silero_vad_weights.py /tmp/silero/silero_vad/data/silero_vad_16k_op15.onnx OUT.safetensors

The `silero-vad` wheel on PyPI (MIT licence, Silero Team) carries the network as ONNX
files and as `silero_vad_16k.safetensors`; the two hold different weights. This renames the
ONNX model's tensors to the names of Silero's own PyTorch module (those of its
.safetensors file), so that `serd.vad.SileroVad` can run either.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ONNX_NAMES = {
    "stft_conv.weight": "model.stft.forward_basis_buffer",
    **{f"conv{i + 1}.{p}": f"model.encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")},
    **{f"lstm_cell.{p}": f"model.decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "model.decoder.decoder.2.weight",
    "final_conv.bias": "model.decoder.decoder.2.bias",
}


def write_safetensors(tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    header: dict = {"__metadata__": metadata}
    offset, blobs = 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx_model", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    import hashlib

    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(args.onnx_model)).graph
    found = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    missing = sorted(v for v in ONNX_NAMES.values() if v not in found)
    if missing:
        raise SystemExit(f"{args.onnx_model}: not Silero VAD v5/v6 16 kHz (missing {missing})")
    digest = hashlib.sha256(args.onnx_model.read_bytes()).hexdigest()
    write_safetensors({k: found[v].astype(np.float32) for k, v in ONNX_NAMES.items()}, args.output,
                      {"source": f"{args.onnx_model.name} sha256 {digest}", "licence": "MIT, Silero Team"})
    print(f"{args.output}: {len(ONNX_NAMES)} tensors from {args.onnx_model.name} (sha256 {digest[:16]}...)")


if __name__ == "__main__":
    main()
