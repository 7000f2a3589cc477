from collections.abc import Iterator

import pytest
from urza_server import Server, start_server

from urza.client import TOKEN_ENV, TOKEN_FILE_ENV, RemoteLibrary


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server per test module (on a free loopback port), with its worker."""
    running = start_server(tmp_path_factory.mktemp("urza") / "library.sqlite")
    yield running
    running.stop()


@pytest.fixture
def remote(server: Server) -> Iterator[RemoteLibrary]:
    """A client of `server` that holds its token."""
    with RemoteLibrary(server.url, token=server.token) as library:
        yield library


@pytest.fixture
def reader(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteLibrary]:
    """A client of `server` without a token."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    with RemoteLibrary(server.url) as library:
        yield library
