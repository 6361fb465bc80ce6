"""Chat and vision backends: every implementation through the same checks against the local stand-in server.

Each implementation says how it is built directly, which settings select it and which leave it absent; the checks
cover the round trip (whole and streamed), failures as ``BackendError``, and configured / not configured status
with a clear ``NotConfigured`` error (see conformance_util.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conformance_util import cases
from fake_openai import FakeOpenAIServer, fake_openai

from lookloop.config import Settings
from lookloop.errors import LookloopError, NotConfigured
from lookloop.models.backends import (
    BackendError,
    ChatBackend,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    backend_status,
    chat_backend,
    user_message,
    vision_backend,
)


class ProxyLlama:
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


@dataclass(frozen=True)
class Impl:
    build: Callable[[FakeOpenAIServer, float], ChatBackend]
    role: str  # "chat" or "vision": which settings function picks it
    # settings that select this implementation (given the server and a scratch folder)
    configure: Callable[[FakeOpenAIServer, Path], dict[str, Any]]
    # settings under which it is absent or unusable, and the words the NotConfigured error must say
    absent: Callable[[Path], dict[str, Any]] = field(default=lambda tmp: {})
    absent_says: str = ""


IMPLEMENTATIONS: dict[str, Impl] = {
    "openai-compatible": Impl(
        build=lambda s, t: OpenAICompatibleBackend(s.base_url, "fake-model", api_key="k1", timeout_s=t),
        role="chat",
        configure=lambda s, tmp: {"chat_base_url": s.base_url, "chat_model": "fake-model", "chat_api_key": "k1"},
        absent_says="LOOKLOOP_CHAT_BASE_URL",
    ),
    # llama.cpp's llama-server speaks the same protocol; users often give its bare host
    "llama-server": Impl(
        build=lambda s, t: OpenAICompatibleBackend(s.base_url.removesuffix("/v1"), "", timeout_s=t),
        role="chat",
        configure=lambda s, tmp: {"chat_base_url": s.base_url.removesuffix("/v1")},
        absent=lambda tmp: {"chat_base_url": "localhost:8080"},  # no scheme: not a URL the backend can use
        absent_says="not an http",
    ),
    "vision-openai-compatible": Impl(
        build=lambda s, t: OpenAICompatibleBackend(s.base_url, "fake-vl", timeout_s=t, role="vision"),
        role="vision",
        configure=lambda s, tmp: {"vision_base_url": s.base_url, "vision_model": "fake-vl"},
        absent_says="LOOKLOOP_VISION_BASE_URL",
    ),
    "llama-cpp-in-process": Impl(
        build=lambda s, t: LlamaCppBackend("model.gguf", timeout_s=t, llama=ProxyLlama(s)),
        role="chat",
        configure=lambda s, tmp: {"llama_cpp_model_path": str(tmp / "model.gguf")},
        # a path to no file: NotConfigured, whether or not llama-cpp-python is installed
        absent=lambda tmp: {"llama_cpp_model_path": str(tmp / "missing.gguf")},
        absent_says="LOOKLOOP_LLAMA_CPP_MODEL_PATH|llama-cpp-python is not installed",
    ),
}

SKIP = {
    "llama-cpp-in-process": {
        "settings_select_it": "settings load a real GGUF file into llama.cpp, which the tests do not ship; the "
                              "in-process path runs here with a stand-in llama",
        "malformed_reply_is_a_backend_error": "runs in-process: there is no HTTP reply to be malformed",
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with fake_openai() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server: FakeOpenAIServer) -> None:
    server.mode = "ok"
    server.canned = {"你好": "Hello", "How are you?": "你好吗？", "long": "a fairly long reply in many pieces"}
    server.requests.clear()


@dataclass
class Ctx:
    impl: Impl
    server: FakeOpenAIServer
    tmp: Path

    def backend(self, timeout_s: float = 5.0) -> ChatBackend:
        return self.impl.build(self.server, timeout_s)

    def select(self, **settings: Any) -> ChatBackend:
        s = Settings(var_dir=self.tmp, **settings)
        return chat_backend(s) if self.impl.role == "chat" else vision_backend(s)


def check_describes_itself(ctx: Ctx) -> None:
    backend = ctx.backend()
    assert isinstance(backend.kind, str) and backend.kind
    assert isinstance(backend.model, str)


def check_complete_round_trip(ctx: Ctx) -> None:
    assert ctx.backend().complete([user_message("translate: 你好")]).strip() == "Hello"
    sent = ctx.server.requests[-1]
    assert sent["messages"][0] == {"role": "user", "content": "translate: 你好"}


def check_stream_round_trip(ctx: Ctx) -> None:
    pieces = list(ctx.backend().stream([user_message("How are you?")]))
    assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == "你好吗？"
    assert ctx.server.requests[-1]["stream"] is True


def check_images_travel_as_data_urls(ctx: Ctx) -> None:
    reply = ctx.backend().complete([user_message("what is this", [(b"\xff\xd8fakejpeg", "image/jpeg")])])
    assert "1 image" in reply
    part = ctx.server.requests[-1]["messages"][0]["content"][1]
    assert part["type"] == "image_url"
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def check_empty_conversation_is_rejected(ctx: Ctx) -> None:
    with pytest.raises(ValueError):
        ctx.backend().complete([])
    assert ctx.server.requests == []


def check_timeout_is_a_backend_error(ctx: Ctx) -> None:
    ctx.server.mode, ctx.server.delay_s = "slow", 1.5
    with pytest.raises(BackendError, match="within 0.3 s"):
        ctx.backend(0.3).complete([user_message("hi")])


def check_server_error_is_a_backend_error(ctx: Ctx) -> None:
    ctx.server.mode = "error"
    with pytest.raises(BackendError) as info:
        ctx.backend().complete([user_message("hi")])
    assert isinstance(info.value, LookloopError) and info.value.status_code == 503
    assert "500" in info.value.message or "failed" in info.value.message


def check_error_mid_stream_is_a_backend_error(ctx: Ctx) -> None:
    ctx.server.mode = "stream_error"
    with pytest.raises(BackendError, match="crashed"):
        list(ctx.backend().stream([user_message("long")]))


def check_malformed_reply_is_a_backend_error(ctx: Ctx) -> None:
    ctx.server.mode = "malformed"
    with pytest.raises(BackendError, match="not JSON"):
        ctx.backend().complete([user_message("hi")])


def check_settings_select_it(ctx: Ctx) -> None:
    settings = ctx.impl.configure(ctx.server, ctx.tmp)
    backend = ctx.select(**settings)
    assert backend.kind == ctx.backend().kind and backend.model == ctx.backend().model
    assert backend.complete([user_message("你好")]) == "Hello"
    status = {s.role: s for s in backend_status(Settings(var_dir=ctx.tmp, **settings))}[ctx.impl.role]
    assert status.configured and status.kind == backend.kind


def check_absent_is_not_configured(ctx: Ctx) -> None:
    settings = ctx.impl.absent(ctx.tmp)
    with pytest.raises(NotConfigured, match=ctx.impl.absent_says) as info:
        ctx.select(**settings)
    assert info.value.status_code == 503
    if not settings:  # nothing set at all: the status says so without connecting anywhere
        status = {s.role: s for s in backend_status(Settings(var_dir=ctx.tmp))}[ctx.impl.role]
        assert not status.configured and status.detail == "not configured"


CHECKS = [
    check_describes_itself,
    check_complete_round_trip,
    check_stream_round_trip,
    check_images_travel_as_data_urls,
    check_empty_conversation_is_rejected,
    check_timeout_is_a_backend_error,
    check_server_error_is_a_backend_error,
    check_error_mid_stream_is_a_backend_error,
    check_malformed_reply_is_a_backend_error,
    check_settings_select_it,
    check_absent_is_not_configured,
]


@pytest.mark.parametrize(("impl", "check"), cases(list(IMPLEMENTATIONS), CHECKS, SKIP))
def test_backend(impl: str, check: Callable[[Ctx], None], server: FakeOpenAIServer, tmp_path: Path) -> None:
    check(Ctx(IMPLEMENTATIONS[impl], server, tmp_path))
