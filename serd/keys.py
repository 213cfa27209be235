"""`serd keys DIR`: CURVE key pairs for the server and a client (zmq.auth certificate files)."""

from __future__ import annotations

import shutil
from pathlib import Path


def make_keys(directory: Path, client_name: str = "client") -> dict[str, Path]:
    """Create server and client key pairs and an `authorized/` folder holding the client's public key.

    Existing files are never overwritten.
    """
    import zmq.auth

    names = ("server", client_name)
    # Check every file first: refusing half-way would leave a new server key beside an old client key.
    for name in names:
        for path in (directory / f"{name}.key", directory / f"{name}.key_secret"):
            if path.exists():
                raise FileExistsError(f"{path} already exists; remove it or choose another directory")
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        public_path, secret_path = zmq.auth.create_certificates(directory, name)
        Path(secret_path).chmod(0o600)
        out[f"{name}_public"], out[f"{name}_secret"] = Path(public_path), Path(secret_path)
    authorized = directory / "authorized"
    authorized.mkdir(exist_ok=True)
    shutil.copy(out[f"{client_name}_public"], authorized / f"{client_name}.key")
    out["authorized"] = authorized
    return out
