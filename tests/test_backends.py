"""Model backends: every ChatBackend implementation runs the same checks against the local stand-in server."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fake_openai import FakeOpenAIServer, fake_openai

from lookloop.config import Settings
from lookloop.errors import NotConfigured
from lookloop.models.backends import (
    BackendError,
    ChatBackend,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    backend_status,
    chat_backend,
    llama_cpp_available,
    user_message,
    vision_backend,
)


class _ProxyLlama:
    """Stands in for ``llama_cpp.Llama``: same call shape, answers come from the stand-in server."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server

    def create_chat_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        body = {k: v for k, v in kwargs.items() if k in ("messages", "max_tokens", "temperature", "stream")}
        with httpx.stream("POST", self.server.base_url + "/chat/completions", json=body, timeout=30) as r:
            if r.status_code != 200:
                raise RuntimeError(f"llama_decode returned {r.status_code}")
            for line in r.iter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    chunk = json.loads(line[5:])
                    if "error" in chunk:
                        raise RuntimeError(chunk["error"]["message"])
                    yield chunk


Factory = Callable[[FakeOpenAIServer, float], ChatBackend]

IMPLEMENTATIONS: dict[str, Factory] = {
    "openai-compatible": lambda s, t: OpenAICompatibleBackend(s.base_url, "fake-model", api_key="k1", timeout_s=t),
    # llama.cpp's llama-server speaks the same protocol; users often give its bare host
    "llama-server": lambda s, t: OpenAICompatibleBackend(s.base_url.removesuffix("/v1"), "", timeout_s=t),
    "llama-cpp-in-process": lambda s, t: LlamaCppBackend("model.gguf", timeout_s=t, llama=_ProxyLlama(s)),
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with fake_openai() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server: FakeOpenAIServer) -> None:
    server.mode = "ok"
    server.canned = {"你好": "Hello", "How are you?": "你好吗？"}
    server.requests.clear()


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
class TestConformance:
    def test_is_a_chat_backend(self, impl: str, server: FakeOpenAIServer) -> None:
        backend = IMPLEMENTATIONS[impl](server, 5.0)
        assert isinstance(backend, ChatBackend)
        assert backend.kind and isinstance(backend.model, str)

    def test_complete(self, impl: str, server: FakeOpenAIServer) -> None:
        backend = IMPLEMENTATIONS[impl](server, 5.0)
        assert backend.complete([user_message("translate: 你好")]).strip() == "Hello"
        assert server.requests[-1]["messages"][0]["content"] == "translate: 你好"

    def test_stream_yields_pieces_that_join_to_the_reply(self, impl: str, server: FakeOpenAIServer) -> None:
        backend = IMPLEMENTATIONS[impl](server, 5.0)
        pieces = list(backend.stream([user_message("How are you?")]))
        assert len(pieces) > 1
        assert "".join(pieces) == "你好吗？"
        assert server.requests[-1]["stream"] is True

    def test_images_travel_as_data_urls(self, impl: str, server: FakeOpenAIServer) -> None:
        backend = IMPLEMENTATIONS[impl](server, 5.0)
        reply = backend.complete([user_message("what is this", [(b"\xff\xd8fakejpeg", "image/jpeg")])])
        assert "1 image" in reply
        part = server.requests[-1]["messages"][0]["content"][1]
        assert part["type"] == "image_url"
        assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")

    def test_timeout_is_a_backend_error(self, impl: str, server: FakeOpenAIServer) -> None:
        server.mode, server.delay_s = "slow", 1.5
        backend = IMPLEMENTATIONS[impl](server, 0.3)
        with pytest.raises(BackendError, match="within 0.3 s"):
            backend.complete([user_message("hi")])

    def test_server_error_is_a_backend_error(self, impl: str, server: FakeOpenAIServer) -> None:
        server.mode = "error"
        backend = IMPLEMENTATIONS[impl](server, 5.0)
        with pytest.raises(BackendError) as info:
            backend.complete([user_message("hi")])
        assert info.value.status_code == 503
        assert "500" in info.value.message or "failed" in info.value.message

    def test_error_mid_stream_is_a_backend_error(self, impl: str, server: FakeOpenAIServer) -> None:
        server.mode = "stream_error"
        server.canned = {"long": "a fairly long reply that arrives in many pieces"}
        backend = IMPLEMENTATIONS[impl](server, 5.0)
        with pytest.raises(BackendError, match="crashed"):
            list(backend.stream([user_message("long")]))


def test_api_key_is_sent_as_bearer(server: FakeOpenAIServer) -> None:
    OpenAICompatibleBackend(server.base_url, "m", api_key="sekrit").complete([user_message("hi")])
    assert server.requests[-1]["_auth"] == "Bearer sekrit"


def test_malformed_reply_is_a_clear_error(server: FakeOpenAIServer) -> None:
    server.mode = "malformed"
    with pytest.raises(BackendError, match="not JSON"):
        OpenAICompatibleBackend(server.base_url, "m").complete([user_message("hi")])


def test_connection_refused_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2)
    with pytest.raises(BackendError, match="could not connect"):
        backend.complete([user_message("hi")])
    with pytest.raises(BackendError, match="could not connect"):
        list(backend.stream([user_message("hi")]))


def test_not_configured_by_default(tmp_path: Any) -> None:
    settings = Settings(var_dir=tmp_path)
    with pytest.raises(NotConfigured, match="LOOKLOOP_CHAT_BASE_URL"):
        chat_backend(settings)
    with pytest.raises(NotConfigured, match="LOOKLOOP_VISION_BASE_URL"):
        vision_backend(settings)
    status = {s.role: s for s in backend_status(settings)}
    assert not status["chat"].configured and not status["vision"].configured


def test_settings_pick_the_backend(tmp_path: Any, server: FakeOpenAIServer) -> None:
    settings = Settings(var_dir=tmp_path, chat_base_url=server.base_url, chat_model="qwen2.5",
                        vision_base_url=server.base_url, vision_model="qwen2.5-vl")
    assert chat_backend(settings).complete([user_message("你好")]) == "Hello"
    assert server.requests[-1]["model"] == "qwen2.5"
    vision_backend(settings).complete([user_message("look", [(b"png", "image/png")])])
    assert server.requests[-1]["model"] == "qwen2.5-vl"
    assert all(s.configured for s in backend_status(settings))


def test_bad_url_is_not_configured(tmp_path: Any) -> None:
    with pytest.raises(NotConfigured, match="not an http"):
        chat_backend(Settings(var_dir=tmp_path, chat_base_url="localhost:8080"))


@pytest.mark.skipif(llama_cpp_available(), reason="llama-cpp-python is installed here")
def test_gguf_without_llama_cpp_says_what_to_do(tmp_path: Any) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    settings = Settings(var_dir=tmp_path, llama_cpp_model_path=str(gguf))
    with pytest.raises(NotConfigured, match="llama-cpp-python is not installed.*llama-server"):
        chat_backend(settings)
    status = {s.role: s for s in backend_status(settings)}
    assert not status["chat"].configured and "llama-server" in status["chat"].detail
