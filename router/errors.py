"""Every exception the router raises, each with a stable machine-readable ``code``.

The tree::

    RouterError                      code
    ├── ConfigError                  invalid_config   (problems: key path + line each)
    ├── ModelLoadError               model_load_failed (names the directory)
    │   ├── DigestMismatchError      digest_mismatch  (names the file and both digests)
    │   └── UntrustedModelError      untrusted_model  (outside model_roots, unsigned, bad signature)
    ├── StoreError                   store_unavailable
    │   └── RecordError              record_unstorable (one record the store cannot encode)
    └── RequestError                 (a request the gateway refuses)
        ├── BadJSONError             bad_json
        ├── InvalidHeaderError       invalid_header
        ├── UnsupportedMediaError    unsupported_media_type
        ├── PayloadTooLargeError     payload_too_large
        ├── RequestTimeoutError      request_timeout (body not in within limits)
        ├── ClientClosedError        client_closed_request (gone before its body came)
        ├── InputValidationError     invalid_input (detail: one entry per field)
        ├── NotReadyError            not_ready
        ├── BackpressureError        overloaded
        ├── ModelFailedError         model_failed
        ├── NotFoundError            not_found
        ├── UnauthorizedError        unauthorized
        ├── AdminDisabledError       admin_disabled
        ├── SwitchConflictError      switch_refused
        └── DuplicateRequestIdError  duplicate_request_id

Domain errors know nothing of HTTP: the status each one is answered with is in the gateway's one
table (``router.gateway.errors.STATUS``), beside its one renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class RouterError(Exception):
    """Base of every error the router raises on purpose."""

    code = "router_error"

    def __init__(self, message: str, detail: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: list[Any] = detail or []


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a YAML file: where (key path, line) and what.

    ``path`` is empty when no key is at fault (the file is missing, or not YAML at all).
    """

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.path or None, "line": self.line, "message": self.message}


class ConfigError(RouterError):
    """The YAML file is unreadable or does not validate; ``problems`` lists each fault.

    Problems are kept in the order of their lines in the file (those without a line last), so
    a reader fixes them top to bottom, whatever order the checks found them in.
    """

    code = "invalid_config"

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
        lines = "; ".join(str(p) for p in problems)
        super().__init__(f"{source}: {lines}", [p.as_dict() for p in problems])


class ModelLoadError(RouterError):
    """A model directory is missing, unreadable or not a model."""

    code = "model_load_failed"


class DigestMismatchError(ModelLoadError):
    """``model.joblib`` does not match the sha256 recorded in ``metadata.json``."""

    code = "digest_mismatch"


class UntrustedModelError(ModelLoadError):
    """A model directory outside ``model_roots``, or unsigned or wrongly signed when a public
    key is required."""

    code = "untrusted_model"


class StoreError(RouterError):
    """The outcome store cannot be opened or written."""

    code = "store_unavailable"


class RecordError(StoreError):
    """The store cannot take a record's content (a lone surrogate, a NUL byte, a number out of
    its range); the store itself is fine, and the other records of the batch may be."""

    code = "record_unstorable"


class RequestError(RouterError):
    """A request the gateway refuses; the gateway's status table says how it answers."""

    code = "bad_request"


class BadJSONError(RequestError):
    code = "bad_json"


class InvalidHeaderError(RequestError):
    code = "invalid_header"


class UnsupportedMediaError(RequestError):
    code = "unsupported_media_type"


class PayloadTooLargeError(RequestError):
    code = "payload_too_large"


class RequestTimeoutError(RequestError):
    """The request's body did not arrive within ``limits.body_timeout_s``."""

    code = "request_timeout"


class ClientClosedError(RequestError):
    """The client closed the connection (or shutdown closed it) before its body arrived; no
    one reads the answer, which exists so the one renderer handles it."""

    code = "client_closed_request"


class InputValidationError(RequestError):
    code = "invalid_input"


class NotReadyError(RequestError):
    code = "not_ready"


class BackpressureError(RequestError):
    code = "overloaded"


class ModelFailedError(RequestError):
    code = "model_failed"


class NotFoundError(RequestError):
    code = "not_found"


class UnauthorizedError(RequestError):
    code = "unauthorized"


class AdminDisabledError(RequestError):
    code = "admin_disabled"


class SwitchConflictError(RequestError):
    code = "switch_refused"


class DuplicateRequestIdError(RequestError):
    """A client-chosen request id that already names a logged prediction."""

    code = "duplicate_request_id"
