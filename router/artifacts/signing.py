"""Ed25519 signatures of a model directory: who saved it, not only that it is unchanged.

The sha256 in ``metadata.json`` proves a model file is the one saved beside that metadata; it
says nothing of who wrote both. A signature does: ``router sign DIR --key KEY`` signs the
directory's digest with an Ed25519 private key and writes ``signature.json``; a gateway given
the public key loads only directories whose signature verifies.

The directory's digest is the sha256 of a manifest, one line per file the loader reads::

    router model directory v1
    <sha256 of metadata.json>  metadata.json
    <sha256 of the model file>  model.joblib | model.skops
    <sha256 of the reference sample>  reference_sample.npy      (when there is one)

The model file's and the sample's digests are the ones ``metadata.json`` records, and the loader
checks the very bytes it deserialises against them, so a signature over this manifest covers
every byte that is loaded, with no window between checking a file and reading it.

Keys are PEM files as ``openssl genpkey -algorithm ed25519`` writes them (PKCS#8 private key,
SubjectPublicKeyInfo public key). ``cryptography`` is an
extra (``router[sign]``): it is imported only when a key is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.artifacts.files import SIGNATURE_FILE, atomic_write
from router.errors import ModelLoadError, UntrustedModelError

__all__ = ["MANIFEST_HEADER", "directory_digest", "key_fingerprint",
           "load_private_key", "load_public_key", "manifest",
           "signed_message", "verify_signature", "write_signature"]

MANIFEST_HEADER = "router model directory v1"
ALGORITHM = "ed25519"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ModelLoadError(
            "model signatures need the cryptography package: pip install 'router[sign]'"
        ) from None
    return ed25519


def manifest(files: Mapping[str, str]) -> bytes:
    """The manifest of ``{file name: sha256}``, names in sorted order."""
    lines = [MANIFEST_HEADER, *(f"{files[name]}  {name}" for name in sorted(files))]
    return ("\n".join(lines) + "\n").encode()


def directory_digest(files: Mapping[str, str]) -> str:
    """The hex sha256 of :func:`manifest`: what is signed."""
    return hashlib.sha256(manifest(files)).hexdigest()


def signed_message(digest: str) -> bytes:
    # Prefixed, so a signature made for a model directory cannot pass as one over anything else.
    return f"{MANIFEST_HEADER} sha256:{digest}".encode()


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from a PEM file (unencrypted PKCS#8)."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ModelLoadError(
            f"{path}: the private key is encrypted; decrypt it to a protected file first "
            "(openssl pkey -in KEY -out PLAIN)") from None
    except ValueError as exc:
        raise ModelLoadError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ModelLoadError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Any:
    """An Ed25519 public key from a PEM file."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    data = _read_key_file(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ModelLoadError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def _read_key_file(path: str | Path, kind: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the {kind} key ({exc.strerror})") from None


def key_fingerprint(public_key: Any) -> str:
    """sha256 of the raw 32-byte public key, hex: names a key in signature.json and errors."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def write_signature(directory: Path, files: Mapping[str, str], private_key: Any) -> Path:
    """Sign the digest of ``files`` and write ``signature.json`` in ``directory``."""
    digest = directory_digest(files)
    signature = private_key.sign(signed_message(digest))
    document = {
        "algorithm": ALGORITHM,
        "manifest": MANIFEST_HEADER,
        "files": dict(sorted(files.items())),
        "digest": digest,
        "public_key_sha256": key_fingerprint(private_key.public_key()),
        "signature": base64.b64encode(signature).decode(),
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    path = directory / SIGNATURE_FILE
    text = json.dumps(document, indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path


def verify_signature(directory: Path, files: Mapping[str, str], public_key: Any) -> None:
    """Raise :class:`UntrustedModelError` unless ``signature.json`` signs the digest of
    ``files`` (the digests the loader will check) with ``public_key``'s private half."""
    from cryptography.exceptions import InvalidSignature

    path = directory / SIGNATURE_FILE
    expected_key = key_fingerprint(public_key)
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UntrustedModelError(
            f"{directory}: unsigned ({SIGNATURE_FILE} missing) and the gateway requires "
            f"models signed by key {expected_key[:16]}; sign it with router sign",
            [{"path": str(directory), "problem": "unsigned"}]) from None
    except (OSError, ValueError) as exc:
        raise UntrustedModelError(f"{path}: unreadable or not JSON ({exc})",
                                  [{"path": str(path), "problem": "unreadable"}]) from None
    if not isinstance(document, dict) or document.get("algorithm") != ALGORITHM \
            or not isinstance(document.get("signature"), str):
        raise UntrustedModelError(f"{path}: not an {ALGORITHM} signature of this router",
                                  [{"path": str(path), "problem": "malformed"}])
    digest = directory_digest(files)
    try:
        signature = base64.b64decode(document["signature"], validate=True)
        public_key.verify(signature, signed_message(digest))
    except (ValueError, InvalidSignature):
        signed_by = document.get("public_key_sha256")
        why = (f"signed by another key ({str(signed_by)[:16]}, not {expected_key[:16]})"
               if signed_by != expected_key else "the signature does not match the files")
        changed = sorted(name for name, sha in files.items()
                         if document.get("files", {}).get(name) != sha) \
            if isinstance(document.get("files"), dict) else []
        if changed and signed_by == expected_key:
            why += f" (changed since signing: {', '.join(changed)})"
        raise UntrustedModelError(
            f"{directory}: wrongly signed: {why}; refusing to load it",
            [{"path": str(directory), "problem": "bad_signature", "changed": changed}],
        ) from None
