"""The coordinator: HTTP API, scheduler, durable state and the content-addressed store."""

from .app import build_app
from .settings import Settings

__all__ = ["Settings", "build_app"]
