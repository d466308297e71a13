"""Content-addressed file storage."""

from .local import BlobError, LocalBlobs
from .response import BlobResponse

__all__ = ["BlobError", "BlobResponse", "LocalBlobs"]
