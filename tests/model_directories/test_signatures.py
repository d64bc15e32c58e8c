"""Ed25519 signatures of model directories: `router sign`, and loads that require them."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from router.artifacts import (
    METADATA_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    file_sha256,
    load_model,
    sign_directory,
)
from router.cli import main
from router.errors import DigestMismatchError, ModelLoadError, UntrustedModelError
from tests.configs import write_config

pytest.importorskip("cryptography")

Keys = tuple[Path, Path]


def _key_pair(directory: Path, name: str) -> Keys:
    """A private and a public PEM file, written as openssl does (the documented way)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)],
                       check=True, capture_output=True)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return _key_pair(tmp_path, "models")


@pytest.fixture
def model(tmp_path: Path, champion_dir: Path) -> Path:
    return Path(shutil.copytree(champion_dir, tmp_path / "iris-rf" / "1"))


def test_signed_directory_loads_with_the_public_key(model: Path, keys: Keys) -> None:
    private, public = keys
    path = sign_directory(model, private)
    assert path == model / SIGNATURE_FILE
    document = json.loads(path.read_text())
    assert document["algorithm"] == "ed25519"
    assert set(document["files"]) == {METADATA_FILE, MODEL_FILE, "reference_sample.npy"}
    assert document["files"][MODEL_FILE] == file_sha256(model / MODEL_FILE)
    assert load_model(model, public_key=public).metadata["name"] == "iris-rf"


def test_unsigned_directory_is_refused_naming_it(model: Path, keys: Keys) -> None:
    _, public = keys
    with pytest.raises(UntrustedModelError, match="unsigned") as caught:
        load_model(model, public_key=public)
    assert str(model) in caught.value.message
    assert caught.value.code == "untrusted_model"
    load_model(model)  # without a key, signatures are not asked for


def test_tampered_signature_is_refused(model: Path, keys: Keys) -> None:
    private, public = keys
    path = sign_directory(model, private)
    document = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(document["signature"]))
    raw[0] ^= 1
    document["signature"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(document))
    with pytest.raises(UntrustedModelError, match="wrongly signed") as caught:
        load_model(model, public_key=public)
    assert str(model) in caught.value.message


def test_signature_of_another_key_is_refused(model: Path, keys: Keys, tmp_path: Path) -> None:
    _, public = keys
    other_private, _ = _key_pair(tmp_path, "other")
    sign_directory(model, other_private)
    with pytest.raises(UntrustedModelError, match="signed by another key"):
        load_model(model, public_key=public)


def test_metadata_changed_after_signing_is_refused(model: Path, keys: Keys) -> None:
    """A new model file with its digest written into metadata.json: the signature breaks."""
    private, public = keys
    sign_directory(model, private)
    (model / MODEL_FILE).write_bytes((model / MODEL_FILE).read_bytes() + b"\0")
    metadata = json.loads((model / METADATA_FILE).read_text())
    metadata["sha256"] = file_sha256(model / MODEL_FILE)
    (model / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(UntrustedModelError) as caught:
        load_model(model, public_key=public)
    assert f"changed since signing: {METADATA_FILE}, {MODEL_FILE}" in caught.value.message


def test_model_file_changed_after_signing_fails_its_digest(model: Path, keys: Keys) -> None:
    private, public = keys
    sign_directory(model, private)
    (model / MODEL_FILE).write_bytes(b"not the model")
    with pytest.raises(DigestMismatchError):
        load_model(model, public_key=public)


def test_a_changed_directory_is_not_signed(model: Path, keys: Keys) -> None:
    """Signing vouches for the files: one that fails its digest is refused, nothing written."""
    private, _ = keys
    (model / MODEL_FILE).write_bytes(b"changed")
    with pytest.raises(DigestMismatchError):
        sign_directory(model, private)
    assert not (model / SIGNATURE_FILE).exists()


def test_skops_directory_signed_and_loaded(
    iris_data: tuple, keys: Keys, tmp_path: Path
) -> None:
    pytest.importorskip("skops")
    from sklearn.linear_model import LogisticRegression

    from router.artifacts import save_model

    private, public = keys
    X, y = iris_data
    directory = save_model(LogisticRegression(max_iter=1000).fit(X, y), tmp_path / "m",
                           name="m", version="1", X_train=X, format="skops")
    sign_directory(directory, private)
    files = json.loads((directory / SIGNATURE_FILE).read_text())["files"]
    assert "model.skops" in files
    assert load_model(directory, public_key=public).metadata["format"] == "skops"


def test_cli_sign_then_validate_with_the_public_key(
    model: Path, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """`router validate --public-key` refuses the unsigned champion naming key, line and path;
    after `router sign` the same file validates."""
    for variable in ("ROUTER_MODEL_PUBLIC_KEY", "ROUTER_SKOPS_TRUSTED_TYPES"):
        monkeypatch.setenv(variable, "")  # the CLI sets them for its children: undone after
    private, public = keys
    config = write_config(tmp_path, champion=model, mode="single")
    assert main(["validate", str(config), "--public-key", str(public)]) == 1
    err = capsys.readouterr().err
    assert f"champion.path: {model}: unsigned" in err and len(err.strip().splitlines()) == 1

    assert main(["sign", str(model), "--key", str(private)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"signed {model} with key ") and str(model / SIGNATURE_FILE) in out
    assert main(["validate", str(config), "--public-key", str(public)]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["missing", "public-as-private", "not-a-key"])
def test_cli_sign_with_a_bad_key_is_one_line(
    problem: str, model: Path, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = keys
    key = {"missing": tmp_path / "nowhere.pem", "public-as-private": public,
           "not-a-key": model / METADATA_FILE}[problem]
    assert main(["sign", str(model), "--key", str(key)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("router: error: ") and str(key) in err
    assert len(err.strip().splitlines()) == 1
    assert not (model / SIGNATURE_FILE).exists()


def test_a_public_key_that_is_not_one_is_a_load_error(model: Path, keys: Keys) -> None:
    private, _ = keys
    with pytest.raises(ModelLoadError, match="not a PEM public key"):
        load_model(model, public_key=private)


def test_validate_with_a_missing_public_key_is_one_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file that is not there stops the command before any model loads."""
    monkeypatch.setenv("ROUTER_MODEL_PUBLIC_KEY", "")
    config = write_config(tmp_path, champion=model, mode="single")
    missing = tmp_path / "nowhere.pub"
    assert main(["validate", str(config), "--public-key", str(missing)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("router: error: ") and str(missing) in line


def test_validate_trusts_skops_types_named_on_the_command_line(
    iris_data: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model.skops needing a test type: refused by validate, accepted with --trust-type."""
    pytest.importorskip("skops")
    from router.artifacts import save_model
    from tests.fixture_models import FAIL_ENV, FailingClassifier

    for variable in ("ROUTER_MODEL_PUBLIC_KEY", "ROUTER_SKOPS_TRUSTED_TYPES"):
        monkeypatch.setenv(variable, "")
    monkeypatch.setenv(FAIL_ENV, "0")
    X, y = iris_data
    directory = save_model(FailingClassifier().fit(X, y), tmp_path / "m" / "1", name="m",
                           version="1", X_train=X, format="skops")
    config = write_config(tmp_path, champion=directory, mode="single")
    assert main(["validate", str(config)]) == 1
    assert "tests.fixture_models.FailingClassifier" in capsys.readouterr().err
    assert main(["validate", str(config), "--trust-type",
                 "tests.fixture_models.FailingClassifier"]) == 0
    assert "ok" in capsys.readouterr().out
