"""The HTTP face of the router: the only package that knows about Starlette."""

from router.gateway.app import create_app

__all__ = ["create_app"]
