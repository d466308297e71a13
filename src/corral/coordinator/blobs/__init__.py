"""Content-addressed file storage."""

from .local import BlobError, LocalBlobs

__all__ = ["BlobError", "LocalBlobs"]
