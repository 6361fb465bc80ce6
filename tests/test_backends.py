"""Model backends beyond the shared checks (test_conformance_backends.py): keys, refused connections, GGUF set-up."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAIServer, fake_openai

from lookloop.config import Settings
from lookloop.errors import NotConfigured
from lookloop.models.backends import (
    BackendError,
    OpenAICompatibleBackend,
    backend_status,
    chat_backend,
    llama_cpp_available,
    user_message,
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with fake_openai() as srv:
        yield srv


def test_api_key_is_sent_as_bearer(server: FakeOpenAIServer) -> None:
    OpenAICompatibleBackend(server.base_url, "m", api_key="sekrit").complete([user_message("hi")])
    assert server.requests[-1]["_auth"] == "Bearer sekrit"


def test_connection_refused_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2)
    with pytest.raises(BackendError, match="could not connect"):
        backend.complete([user_message("hi")])
    with pytest.raises(BackendError, match="could not connect"):
        list(backend.stream([user_message("hi")]))


@pytest.mark.skipif(llama_cpp_available(), reason="llama-cpp-python is installed here")
def test_gguf_without_llama_cpp_says_what_to_do(tmp_path: Any) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    settings = Settings(var_dir=tmp_path, llama_cpp_model_path=str(gguf))
    with pytest.raises(NotConfigured, match="llama-cpp-python is not installed.*llama-server"):
        chat_backend(settings)
    status = {s.role: s for s in backend_status(settings)}
    assert not status["chat"].configured and "llama-server" in status["chat"].detail
