"""Content-addressed file storage: the seam (base.py) and its backends."""

from .base import BlobError, Blobs, BlobUnavailable
from .database import DatabaseBlobs
from .local import LocalBlobs
from .response import BlobResponse

__all__ = ["BlobError", "BlobResponse", "BlobUnavailable", "Blobs", "DatabaseBlobs", "LocalBlobs"]
