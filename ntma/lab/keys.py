"""The lab's keys: one X25519 key file per daemon (mode 0600), in ntma's own key format."""

from __future__ import annotations

import os
from pathlib import Path

from ..proto.crypto import StaticKey, write_key_file


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (0600, even if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def new_key(path: Path) -> StaticKey:
    """A fresh key, written to `path` as `ntma keygen` would."""
    key = StaticKey.generate()
    write_key_file(path, key)
    return key


def generate_key(path: Path) -> str:
    """Write a fresh X25519 private key (base64 of 32 raw bytes, mode 0600); return pub b64."""
    return new_key(path).public_base64()
