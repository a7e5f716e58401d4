"""The live-server fixtures of ``tests/server`` (one definition, shared here)."""

from tests.server.conftest import conn, kmip_server, kmip_server_factory

__all__ = ["conn", "kmip_server", "kmip_server_factory"]
