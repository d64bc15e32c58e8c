"""The REST routes: /predict, /feedback, /config, /health, /ready."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.errors import (
    BackpressureError,
    InputValidationError,
    InvalidHeaderError,
    NotReadyError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from router.gateway.override import forced_variant
from router.gateway.request_keys import (
    header_map,
    segments_of,
    unit_id_of,
)
from router.gateway.state import GatewayState
from router.outcomes.records import FeedbackRecord
from router.serving.inputs import decode_json, parse_predict_body
from router.serving.service import Answer, row_ids_for
from router.serving.snapshot import Snapshot
from router.strings import MAX_ID_LENGTH, MAX_LABEL_LENGTH, not_utf8, printable, text_problem


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                    status_code=status, media_type="application/json", headers=headers)


class JSONAnswer(Response):
    """A JSON response built straight from encoded bytes and raw headers.

    Starlette's ``Response.__init__`` encodes and scans a headers dict on every answer; on the
    prediction path that was about a tenth of the router's own time per request.
    """

    media_type = "application/json"

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]],
                 status_code: int = 200, *, variant: str | None = None) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.variant = variant  # for the metrics, which would otherwise parse the headers
        self.raw_headers = [(b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"), *raw_headers]


def state_of(request: Request) -> GatewayState:
    gateway: GatewayState = request.app.gateway  # the Gateway's own attribute: a plain lookup
    return gateway


# Set in a request's scope when its whole body is already in hand (the connection protocol's
# direct answer): decoding it as it is spares an async generator and a receive per request.
WHOLE_BODY = "router.whole_body"


async def read_json(request: Request, max_bytes: int, *, json_by_default: bool = False) -> Any:
    """The decoded body, after the content type and size checks every POST route shares.

    ``json_by_default`` reads a body without a Content-Type as JSON: clients of the Open
    Inference Protocol (tritonclient among them) send none.
    """
    headers = header_map(request)
    content_type = headers.get(b"content-type", b"")
    if not (json_by_default and not content_type) and content_type != b"application/json" and \
            content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        shown = content_type.decode("latin-1") or "none"
        raise UnsupportedMediaError(
            f"Content-Type must be application/json, got {shown}",
            [{"header": "content-type", "got": shown}])
    encoding = headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        # Refused as what it is: decoded as text, a gzip body reads "not UTF-8: byte 0x8B".
        shown = encoding.decode("latin-1")
        raise UnsupportedMediaError(
            f"compressed request bodies are not supported (Content-Encoding: {shown})",
            [{"header": "content-encoding", "got": shown}])
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    whole: bytes | None = request.scope.get(WHOLE_BODY)
    if whole is not None:
        if len(whole) > max_bytes:
            raise _too_large(len(whole), max_bytes)
        return decode_json(whole)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    return decode_json(b"".join(chunks))


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"body of {size} bytes is over limits.max_body_bytes = {limit}",
        [{"limit_bytes": limit}])


# Seeded from os.urandom, and again in a forked child, so two workers never share a sequence;
# a system call per id (os.urandom) was about 1 % of the gateway's time under load.
_id_bits = random.Random()
os.register_at_fork(after_in_child=_id_bits.seed)


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: the time in milliseconds, then 74 random bits.

    Time-ordered rather than random (uuid4): the log's index on request ids then grows at its
    right edge instead of at random pages, which kept a SQLite insert at about 7 µs where
    random ids made it 10 µs at first and 24 µs by 400,000 rows.
    """
    random_bits = _id_bits.getrandbits(74)
    value = ((time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (random_bits >> 62) << 64
             | 0b10 << 62 | random_bits & ((1 << 62) - 1))
    return f"{value:032x}"


def request_id_of(request: Request) -> str:
    """The client's X-Request-Id when it sent one (refused if it could not be stored), else a
    fresh id."""
    given = header_map(request).get(b"x-request-id")
    if not given:
        request_id = new_request_id()
    else:
        try:
            # UTF-8, as the JSON that names it in feedback is: an id decoded otherwise would
            # be logged as other text, and its feedback would join nothing.
            request_id = given.decode()
        except UnicodeDecodeError as exc:
            request_id = ""
            problem: str | None = not_utf8(given, exc)
        else:
            problem = text_problem(request_id, max_length=MAX_ID_LENGTH)
        if problem is not None:
            raise InvalidHeaderError(f"X-Request-Id {problem}",
                                     [{"header": "x-request-id", "message": problem}])
        request.scope[CLIENT_CHOSE_ID] = True
    request.scope["router.request_id"] = request_id
    return request_id


# Set in a request's scope when its id came from the client: True for the X-Request-Id
# header, ID_IN_BODY for an Open Inference Protocol request's "id".
CLIENT_CHOSE_ID = "router.client_request_id"
ID_IN_BODY = "body"


def predict_logged(request: Request, snapshot: Snapshot, rows: np.ndarray, *,
                   request_id: str, batch: bool, unit_id: str | None,
                   segments: dict[str, str] | None, forced: str | None) -> Awaitable[Answer]:
    """The prediction service's answer, to await; an id the client chose is claimed first,
    so that it names one prediction only (``router.gateway.request_ids``).

    Without such an id, the service's own coroutine: not one more around it, which every
    request would create and step through twice. (Keywords named, not ``**options``: a dict
    packed and unpacked again per request.)"""
    service = state_of(request).service
    if not request.scope.get(CLIENT_CHOSE_ID):
        return service.predict(snapshot, rows, request_id=request_id, batch=batch,
                               unit_id=unit_id, segments=segments, forced=forced)
    return _predict_claimed(request, snapshot, rows, request_id=request_id, batch=batch,
                            unit_id=unit_id, segments=segments, forced=forced)


async def _predict_claimed(request: Request, snapshot: Snapshot, rows: np.ndarray, *,
                           request_id: str, batch: bool, unit_id: str | None,
                           segments: dict[str, str] | None, forced: str | None) -> Answer:
    state = state_of(request)
    row_ids = row_ids_for(request_id, len(rows), batch) if batch else []
    await state.request_ids.claim(request_id, row_ids,
                                  in_body=request.scope[CLIENT_CHOSE_ID] == ID_IN_BODY)
    try:
        return await state.service.predict(snapshot, rows, request_id=request_id, batch=batch,
                                           unit_id=unit_id, segments=segments, forced=forced)
    except BackpressureError:  # refused before anything was logged: the id is still free
        state.request_ids.release(request_id, row_ids)
        raise


def answer_headers(answer: Answer) -> dict[str, str]:
    """For Starlette, which writes a header's text as latin-1: the id's UTF-8 bytes so written
    are the bytes the client sent (or a body's id in UTF-8)."""
    return {"X-Request-Id": answer.request_id.encode().decode("latin-1"),
            "X-Variant": answer.variant.encode().decode("latin-1")}


def raw_answer_headers(answer: Answer) -> list[tuple[bytes, bytes]]:
    return [(b"x-request-id", answer.request_id.encode()),
            (b"x-variant", answer.variant.encode())]


def render_answer(answer: Answer, batch: bool) -> dict[str, Any]:
    if not batch:
        # Written out for one row, the shape nearly every request has: built as a batch's row
        # list, merged into the head, it took two and a half times as long.
        label = answer.labels[0]
        by_class = None if answer.probabilities is None else answer.probabilities[0]
        return {"request_id": answer.request_id, "variant": answer.variant,
                "model": answer.model, "version": answer.version, "prediction": label,
                "probability": None if by_class is None else by_class[str(label)],
                "probabilities": by_class}
    head = {"request_id": answer.request_id, "variant": answer.variant,
            "model": answer.model, "version": answer.version}
    rows = [
        {"prediction": answer.labels[i], "probability": answer.probability(i),
         "probabilities": None if answer.probabilities is None else answer.probabilities[i]}
        for i in range(len(answer.labels))
    ]
    for row_id, row in zip(answer.row_ids, rows, strict=True):
        row["id"] = row_id
    return {**head, "predictions": rows}


def encoded_answer(answer: Answer, batch: bool) -> bytes:
    """The answer's JSON body (a function of its own, so a profile can tell encoding apart)."""
    return orjson.dumps(render_answer(answer, batch), option=orjson.OPT_SERIALIZE_NUMPY)


async def predict(request: Request) -> Response:
    state = state_of(request)
    request_id = request_id_of(request)
    snapshot = state.snapshots.current
    body = await read_json(request, snapshot.config.limits.max_body_bytes)
    parsed = parse_predict_body(body, snapshot.champion.feature_names,
                                max_batch=snapshot.config.limits.max_batch,
                                extra_keys=snapshot.body_keys,
                                max_abs=snapshot.input_bound)
    answer = await predict_logged(
        request, snapshot, parsed.rows, request_id=request_id, batch=parsed.batch,
        unit_id=unit_id_of(snapshot, request, parsed.body),
        segments=segments_of(snapshot, request, parsed.body),
        forced=forced_variant(snapshot, header_map(request)))
    return JSONAnswer(encoded_answer(answer, parsed.batch), raw_answer_headers(answer),
                      variant=answer.variant)


async def feedback(request: Request) -> Response:
    state = state_of(request)
    if not state.writer.accepting:
        # As for a prediction: what the log cannot take is refused, not left to fill memory.
        raise BackpressureError("the outcome log is behind; retry shortly")
    snapshot = state.snapshots.current
    body = await read_json(request, snapshot.config.limits.max_body_bytes)
    records = parse_feedback(body, max_batch=snapshot.config.limits.max_batch,
                             truths=Truths.of(snapshot))
    state.writer.submit_feedback(records)
    return json_response({"accepted": len(records)}, status=202)


class Truths(NamedTuple):
    """What ground truth the served models' statistics can use: feedback of another kind would
    be stored and then count wrongly (a label that is no class is every model's mistake) or
    erase what was right (a number as a classifier's latest feedback leaves its request with
    no label)."""

    task: str | None  # "classification" or "regression" when every served model is one
    labels: frozenset[str]  # the served classifiers' classes, as the store keeps a label

    @classmethod
    def of(cls, snapshot: Snapshot) -> Truths:
        models = snapshot.models.values()
        tasks = {model.task for model in models}
        return cls(tasks.pop() if len(tasks) == 1 else None,
                   frozenset(str(c) for model in models for c in model.classes or ()))

    def label_text(self, label: Any) -> str:
        """A label as the store keeps it: its text, or, for a number that equals a class as a
        number (1.0 for the class 1, or 1 for 1.0), that class's text. JSON does not keep
        1 and 1.0 apart as the person meant them, and a float column of labels is common."""
        text = str(label)
        if text in self.labels or isinstance(label, bool) or not isinstance(label, int | float):
            return text
        if isinstance(label, int):
            other = str(float(label))
        elif label.is_integer():
            other = str(int(label))
        else:
            return text
        return other if other in self.labels else text

    def problem(self, label: Any, has_label: bool) -> tuple[str, str] | None:
        """The field at fault and why, for feedback these models could never count."""
        if self.task == "classification" and not has_label:
            return "value", 'the served models are classifiers: give "label"'
        if self.task == "regression" and has_label:
            return "label", 'the served models are regressors: give "value"'
        if self.task == "classification" and self.label_text(label) not in self.labels:
            classes = sorted(self.labels)
            shown = ", ".join(classes[:MAX_CLASSES_NAMED]) + (
                f", and {len(classes) - MAX_CLASSES_NAMED} more"
                if len(classes) > MAX_CLASSES_NAMED else "")
            return "label", f"{printable(str(label))!r} is none of the served models' classes " \
                            f"({shown})"
        return None


ANY_TRUTH = Truths(None, frozenset())
MAX_CLASSES_NAMED = 20


def parse_feedback(body: Any, *, max_batch: int, truths: Truths = ANY_TRUTH
                   ) -> list[FeedbackRecord]:
    """``{"request_id", "label" | "value"}`` or ``{"feedback": [...]}``; every fault named,
    feedback that ``truths`` says could never count included."""
    if isinstance(body, dict) and "feedback" in body:
        items, prefixes = body["feedback"], None
        unknown = [{"field": printable(k), "message": "unknown field"}
                   for k in body if k != "feedback"]
        if unknown:
            raise InputValidationError(
                f"unknown top-level field(s) beside feedback: "
                f"{', '.join(u['field'] for u in unknown)}", unknown)
        if not isinstance(items, list) or not items:
            raise InputValidationError('"feedback" must be a non-empty list',
                                       [{"field": "feedback",
                                         "message": "expected a non-empty list"}])
        if len(items) > max_batch:
            raise PayloadTooLargeError(
                f"{len(items)} feedback items is over limits.max_batch = {max_batch}",
                [{"field": "feedback", "message": f"at most {max_batch} items"}])
        prefixes = [f"feedback[{i}]." for i in range(len(items))]
    else:
        items, prefixes = [body], [""]
    now = time.time()
    records: list[FeedbackRecord] = []
    problems: list[dict[str, str]] = []
    for item, prefix in zip(items, prefixes, strict=True):
        record = _feedback_item(item, prefix, now, problems, truths)
        if record is not None:
            records.append(record)
    if problems:
        shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise InputValidationError(f"invalid feedback: {shown}", problems)
    return records


def _feedback_item(item: Any, prefix: str, now: float, problems: list[dict[str, str]],
                   truths: Truths) -> FeedbackRecord | None:
    if not isinstance(item, dict):
        problems.append({"field": prefix.rstrip(".") or "(body)",
                         "message": "expected an object with request_id and label or value"})
        return None
    before = len(problems)
    request_id = item.get("request_id")
    if not isinstance(request_id, str):
        problems.append({"field": f"{prefix}request_id", "message": "must be a non-empty string"})
    elif (problem := text_problem(request_id, max_length=MAX_FEEDBACK_ID_LENGTH)) is not None:
        problems.append({"field": f"{prefix}request_id", "message": problem})
    unknown = [k for k in item if k not in ("request_id", "label", "value")]
    problems.extend({"field": f"{prefix}{printable(k)}", "message": "unknown field"}
                    for k in unknown)
    has_label, has_value = "label" in item, "value" in item
    label: Any = item.get("label")  # any JSON value, checked below
    value: Any = item.get("value")
    if has_label == has_value:
        problems.append({"field": f"{prefix}label",
                         "message": 'give exactly one of "label" (classes) or "value" (numbers)'})
    elif has_label and (problem := _label_problem(label)) is not None:
        problems.append({"field": f"{prefix}label", "message": problem})
    elif has_value and not _finite_number(value):
        problems.append({"field": f"{prefix}value", "message": "must be a finite number"})
    elif (fault := truths.problem(label, has_label)) is not None:
        problems.append({"field": f"{prefix}{fault[0]}", "message": fault[1]})
    if len(problems) > before or not isinstance(request_id, str):  # the latter reported above
        return None
    return FeedbackRecord(request_id=request_id, ts=now,
                          label=truths.label_text(label) if has_label else None,
                          value=float(value) if has_value else None)


# A batch row's id is the request id and ``:<index>``.
MAX_FEEDBACK_ID_LENGTH = MAX_ID_LENGTH + 8


def _finite_number(value: Any) -> bool:
    if type(value) is int:
        return abs(value) < 1e308  # float() of a larger one overflows
    return type(value) is float and math.isfinite(value)


def _label_problem(label: Any) -> str | None:
    if isinstance(label, str):
        return text_problem(label, max_length=MAX_LABEL_LENGTH)
    if not _finite_number(label):
        return "must be a string or a finite number"
    return None


async def config(request: Request) -> Response:
    state = state_of(request)
    snapshot = state.snapshots.current
    return json_response({
        "revision": snapshot.revision,
        "loaded_at": _iso(snapshot.loaded_at),
        "last_reload_error": state.last_reload_error,
        "config": snapshot.config.to_dict(),
        "models": {role: {"name": snapshot.names[role], "metadata_name": m.name,
                          "version": m.version, "sha256": m.sha256,
                          "task": m.task, "features": list(m.feature_names),
                          "engine": m.engine, "engine_reason": m.engine_reason}
                   for role, m in snapshot.models.items()},
    })


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    state = state_of(request)
    problems = await state.readiness_problems()
    if problems:
        raise NotReadyError("not ready: " + "; ".join(problems),
                            [{"check": p} for p in problems])
    snapshot = state.snapshots.current
    return json_response({"status": "ready", "revision": snapshot.revision,
                          "models": {r: f"{snapshot.names[r]}:{m.version}"
                                     for r, m in snapshot.models.items()}})


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
