"""kmipfast: a high-throughput KMIP key server."""

from __future__ import annotations

__version__ = "0.1.0"
