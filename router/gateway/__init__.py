"""The HTTP face of the router: the only package that knows about Starlette.

``create_app`` loads its module on first use, so that the light modules here
(``connections``, ``metrics_dir``) cost ``router serve`` no import of Starlette or Prometheus's
client before it has checked its configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_names

if TYPE_CHECKING:
    from router.gateway.app import create_app

__all__ = ["create_app"]

__getattr__, __dir__ = lazy_names(__name__, {"create_app": ".app"}, __all__)
