"""Every exception the router raises, each with a stable machine-readable ``code``.

The tree::

    RouterError                      code
    ├── ConfigError                  invalid_config   (problems: key path + line each)
    ├── ModelLoadError               model_load_failed (names the directory)
    │   ├── DigestMismatchError      digest_mismatch  (names the file and both digests)
    │   └── UntrustedModelError      untrusted_model  (outside model_roots, unsigned, bad signature)
    ├── StoreError                   store_unavailable
    │   └── RecordError              record_unstorable (one record the store cannot encode)
    └── RequestError                 (turned into an HTTP answer by router.gateway.errors)
        ├── BadJSONError             bad_json           400
        ├── InvalidHeaderError       invalid_header     400
        ├── UnsupportedMediaError    unsupported_media_type 415
        ├── PayloadTooLargeError     payload_too_large  413
        ├── RequestTimeoutError      request_timeout    408 (body not in within limits)
        ├── ClientClosedError        client_closed_request 499 (gone before its body came)
        ├── InputValidationError     invalid_input      422 (detail: one entry per field)
        ├── NotReadyError            not_ready          503
        ├── BackpressureError        overloaded         503
        ├── ModelFailedError         model_failed       500
        ├── NotFoundError            not_found          404
        ├── UnauthorizedError        unauthorized       401
        ├── AdminDisabledError       admin_disabled     403
        ├── SwitchConflictError      switch_refused     409
        └── DuplicateRequestIdError  duplicate_request_id 409

Domain errors know nothing of HTTP: the status of each ``RequestError`` is a plain number here,
and the one renderer lives in ``router.gateway.errors``.
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
    """A request the gateway refuses; ``status`` is the HTTP status it maps to."""

    status = 400


class BadJSONError(RequestError):
    code, status = "bad_json", 400


class InvalidHeaderError(RequestError):
    code, status = "invalid_header", 400


class UnsupportedMediaError(RequestError):
    code, status = "unsupported_media_type", 415


class PayloadTooLargeError(RequestError):
    code, status = "payload_too_large", 413


class RequestTimeoutError(RequestError):
    """The request's body did not arrive within ``limits.body_timeout_s``."""

    code, status = "request_timeout", 408


class ClientClosedError(RequestError):
    """The client closed the connection (or shutdown closed it) before its body arrived; no
    one reads the answer, which exists so the one renderer handles it."""

    code, status = "client_closed_request", 499


class InputValidationError(RequestError):
    code, status = "invalid_input", 422


class NotReadyError(RequestError):
    code, status = "not_ready", 503


class BackpressureError(RequestError):
    code, status = "overloaded", 503


class ModelFailedError(RequestError):
    code, status = "model_failed", 500


class NotFoundError(RequestError):
    code, status = "not_found", 404


class UnauthorizedError(RequestError):
    code, status = "unauthorized", 401


class AdminDisabledError(RequestError):
    code, status = "admin_disabled", 403


class SwitchConflictError(RequestError):
    code, status = "switch_refused", 409


class DuplicateRequestIdError(RequestError):
    """A client-chosen request id that already names a logged prediction."""

    code, status = "duplicate_request_id", 409
