"""A real `mongod` the suite did not start, named by `SYNCD_TEST_MONGODB_URI[_2]`."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pymongo import MongoClient

from tests.support.servers import CLIENT_TIMEOUT_MS, Credentials, uri_with_database

ENV_URI = "SYNCD_TEST_MONGODB_URI"
ENV_URI_2 = "SYNCD_TEST_MONGODB_URI_2"


class ExternalServer:
    """A server we do not own (a real mongod): never stopped, killed or restarted."""

    def __init__(self, uri: str, *, env_name: str = ENV_URI) -> None:
        self._uri = uri
        self.env_name = env_name

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def host(self) -> str:
        return self._first_host()[0]

    @property
    def port(self) -> int:
        return self._first_host()[1]

    def _first_host(self) -> tuple[str, int]:
        hosts = self._uri.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
        first = hosts.rpartition("@")[2].split(",")[0]
        if first.startswith("["):  # [::1]:27017
            host, _, port = first[1:].partition("]")
            return host, int(port.lstrip(":") or 27017)
        host, _, port = first.partition(":")
        return host, int(port or 27017)

    def uri_for(
        self, database: str | None = None, *, credentials: Credentials | None = None
    ) -> str:
        if credentials is not None:
            pytest.skip("test users are only provisioned on SecantusDB servers")
        return uri_with_database(self._uri, database)

    def client(
        self, *, credentials: Credentials | None = None, **kwargs: Any
    ) -> MongoClient[dict[str, Any]]:
        kwargs.setdefault("serverSelectionTimeoutMS", CLIENT_TIMEOUT_MS * 3)
        return MongoClient(self.uri_for(credentials=credentials), **kwargs)

    def start(self) -> ExternalServer:
        with self.client() as client:
            client.admin.command("ping")
        return self

    def stop(self) -> None:
        pass  # not ours to stop

    def kill(self) -> None:
        pytest.skip(f"cannot kill the external server of ${self.env_name}")

    def restart(self) -> None:
        pytest.skip(f"cannot restart the external server of ${self.env_name}")

    def __repr__(self) -> str:
        return f"ExternalServer(${self.env_name})"  # the URI may hold credentials


def external_uris() -> tuple[str | None, str | None]:
    """(`SYNCD_TEST_MONGODB_URI`, `SYNCD_TEST_MONGODB_URI_2`), unset or empty as None."""
    return (
        os.environ.get(ENV_URI) or None,
        os.environ.get(ENV_URI_2) or None,
    )
