"""The gateway's one table from the router's errors to HTTP statuses."""

from __future__ import annotations

import inspect

import router.errors
from router.errors import RequestError, RouterError, StoreError
from router.gateway.errors import STATUS, status_of


def test_every_refusal_has_its_own_status() -> None:
    """Each kind of refused request is listed by name, so a new one cannot fall through to a
    generic status by accident; the domain errors themselves carry no HTTP."""
    refusals = [kind for _, kind in inspect.getmembers(router.errors, inspect.isclass)
                if issubclass(kind, RequestError) and kind is not RequestError]
    assert refusals
    assert [kind.__name__ for kind in refusals if kind not in STATUS] == []
    assert not [kind for kind in vars(router.errors).values()
                if inspect.isclass(kind) and "status" in vars(kind)]


def test_statuses_follow_the_nearest_listed_ancestor() -> None:
    """A store failure is a 503 to retry, a record the store cannot take too; an error no
    table entry names is a 500."""
    assert status_of(router.errors.InputValidationError("x")) == 422
    assert status_of(router.errors.RecordError("x")) == 503 == STATUS[StoreError]
    assert status_of(router.errors.ModelLoadError("x")) == 500 == STATUS[RouterError]
    assert status_of(ValueError("x")) == 500
