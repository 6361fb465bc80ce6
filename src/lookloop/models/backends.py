"""Pluggable chat and vision model backends, off by default.

* ``OpenAICompatibleBackend``: any server speaking OpenAI's ``/v1/chat/completions`` (vLLM, Ollama, Qwen-VL
  behind an OpenAI-compatible endpoint, llama.cpp's ``llama-server``), over httpx, with SSE streaming.
* ``LlamaCppBackend``: a user's GGUF file run in-process by the optional ``llama-cpp-python`` package.

``chat_backend(settings)`` / ``vision_backend(settings)`` pick one from the settings and raise
``NotConfigured`` when nothing is set up; every failure at call time is a ``BackendError`` (HTTP 503) with a
message that says what went wrong and where.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from lookloop.config import Settings
from lookloop.errors import LookloopError, NotConfigured

Message = dict[str, Any]


class BackendError(LookloopError):
    """A configured backend failed: timeout, refused connection, HTTP error or a malformed reply."""

    status_code = 503


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model: OpenAI-style messages in, text out (whole or streamed)."""

    @property
    def kind(self) -> str: ...

    @property
    def model(self) -> str: ...

    def complete(self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2) -> str: ...

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2
    ) -> Iterator[str]: ...


def image_part(data: bytes, media_type: str = "image/jpeg") -> dict[str, Any]:
    """An ``image_url`` content part carrying the image inline as a base64 data URL."""
    encoded = base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{encoded}"}}


def user_message(text: str, images: Sequence[tuple[bytes, str]] = ()) -> Message:
    """A user turn; with images it uses content parts (text first, then each image)."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend(image_part(data, media) for data, media in images)
    return {"role": "user", "content": parts}


def system_message(text: str) -> Message:
    return {"role": "system", "content": text}


def _endpoint(base_url: str) -> str:
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NotConfigured(f"backend URL {base_url!r} is not an http(s) URL")
    # A bare host ("http://localhost:11434") means the usual /v1 prefix.
    if parts.path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


def _content_of(choice: dict[str, Any], key: str) -> str:
    body = choice.get(key)
    if not isinstance(body, dict):
        return ""
    content = body.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer in content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail", payload))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return str(payload)


class OpenAICompatibleBackend:
    """Chat completions over HTTP; ``base_url`` is the server's API root, e.g. ``http://localhost:11434/v1``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "",
        timeout_s: float = 20.0,
        kind: str = "openai-compatible",
        role: str = "chat",
    ) -> None:
        self.url = _endpoint(base_url)
        self._model = model or "default"
        self._kind = kind
        self.role = role
        self.timeout_s = timeout_s
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # connect fast-fails; read covers the model's thinking time between bytes
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        )

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def model(self) -> str:
        return self._model

    def _where(self) -> str:
        return f"the {self.role} backend ({self._kind}, {self.url})"

    def _body(self, messages: Sequence[Message], max_tokens: int, temperature: float, stream: bool) -> dict[str, Any]:
        if not messages:
            raise ValueError("a chat needs at least one message")
        return {
            "model": self._model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }

    def _fail(self, exc: Exception) -> BackendError:
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(f"{self._where()} did not answer within {self.timeout_s:g} s")
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"could not connect to {self._where()}: is the server running?")
        return BackendError(f"{self._where()} failed: {type(exc).__name__}: {exc}")

    def _check_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            detail = _error_text(json.loads(response.read() or b"null"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            detail = response.text[:200]
        raise BackendError(f"{self._where()} answered HTTP {response.status_code}: {detail[:300]}")

    def complete(self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2) -> str:
        body = self._body(messages, max_tokens, temperature, stream=False)
        try:
            response = self._client.post(self.url, json=body)
            self._check_status(response)
            payload = response.json()
        except BackendError:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackendError(f"{self._where()} sent a reply that is not JSON") from exc
        except httpx.HTTPError as exc:
            raise self._fail(exc) from exc
        try:
            return _content_of(payload["choices"][0], "message")
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self._where()} sent JSON without choices[0].message: {str(payload)[:200]}") from exc

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2
    ) -> Iterator[str]:
        body = self._body(messages, max_tokens, temperature, stream=True)
        try:
            with self._client.stream("POST", self.url, json=body) as response:
                self._check_status(response)
                yield from self._events(response, time.monotonic() + self.timeout_s)
        except BackendError:
            raise
        except httpx.HTTPError as exc:
            raise self._fail(exc) from exc

    def _events(self, response: httpx.Response, deadline: float) -> Iterator[str]:
        """Server-sent events: ``data: {json}`` lines, ended by ``data: [DONE]``."""
        for line in response.iter_lines():
            # httpx's read timeout is per read; a server trickling bytes forever must still stop
            if time.monotonic() > deadline:
                raise BackendError(f"{self._where()} did not finish within {self.timeout_s:g} s")
            line = line.strip()
            if not line or line.startswith(":") or not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError as exc:
                raise BackendError(f"{self._where()} streamed a malformed event: {data[:120]!r}") from exc
            if not isinstance(chunk, dict):
                raise BackendError(f"{self._where()} streamed a malformed event: {data[:120]!r}")
            if "error" in chunk:
                raise BackendError(f"{self._where()} reported an error mid-stream: {_error_text(chunk)[:300]}")
            for choice in chunk.get("choices") or []:
                if isinstance(choice, dict):
                    text = _content_of(choice, "delta")
                    if text:
                        yield text

    def close(self) -> None:
        self._client.close()


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppBackend:
    """A GGUF model run in-process by ``llama-cpp-python`` (optional; not a declared dependency).

    The timeout is a deadline checked between generated tokens: generation stops and a ``BackendError`` is
    raised once it passes.
    """

    def __init__(self, model_path: str, *, timeout_s: float = 20.0, n_ctx: int = 4096, llama: Any = None) -> None:
        self.model_path = model_path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        if llama is not None:
            self._llama = llama
            return
        try:
            import llama_cpp  # optional extra: llama.cpp in process
        except ImportError as exc:
            raise NotConfigured(
                "LOOKLOOP_LLAMA_CPP_MODEL_PATH is set but llama-cpp-python is not installed: "
                "`pip install llama-cpp-python`, or run llama.cpp's llama-server and set LOOKLOOP_CHAT_BASE_URL"
            ) from exc

        if not Path(model_path).is_file():
            raise NotConfigured(f"no GGUF model file at {model_path} (LOOKLOOP_LLAMA_CPP_MODEL_PATH)")
        try:
            self._llama = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, verbose=False)
        except Exception as exc:  # noqa: BLE001 - llama.cpp raises bare ValueError/RuntimeError on bad files
            raise NotConfigured(f"llama.cpp could not load {model_path}: {exc}") from exc

    @property
    def kind(self) -> str:
        return "llama-cpp"

    @property
    def model(self) -> str:
        return Path(self.model_path).name

    def _where(self) -> str:
        return f"the llama.cpp backend ({self.model})"

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2
    ) -> Iterator[str]:
        if not messages:
            raise ValueError("a chat needs at least one message")
        deadline = time.monotonic() + self.timeout_s
        with self._lock:  # one llama context serves one generation at a time
            try:
                chunks = self._llama.create_chat_completion(
                    messages=list(messages), max_tokens=max_tokens, temperature=temperature, stream=True
                )
                for chunk in chunks:
                    if time.monotonic() > deadline:
                        raise BackendError(f"{self._where()} did not finish within {self.timeout_s:g} s")
                    for choice in chunk.get("choices") or []:
                        text = _content_of(choice, "delta")
                        if text:
                            yield text
            except (BackendError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - surface llama.cpp failures as one clear error
                raise BackendError(f"{self._where()} failed: {type(exc).__name__}: {exc}") from exc

    def complete(self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2) -> str:
        return "".join(self.stream(messages, max_tokens=max_tokens, temperature=temperature))


# -- choosing backends from the settings ---------------------------------------------------------------


@dataclass(frozen=True)
class BackendStatus:
    """What the capabilities endpoint says about one backend (never the key)."""

    role: str
    configured: bool
    kind: str
    model: str
    detail: str


_cache_lock = threading.Lock()
_cache: dict[tuple[Any, ...], ChatBackend] = {}


def _cached(key: tuple[Any, ...], build: Any) -> ChatBackend:
    with _cache_lock:
        backend = _cache.get(key)
        if backend is None:
            backend = build()
            _cache[key] = backend
        return backend


def chat_backend(settings: Settings) -> ChatBackend:
    """The chat backend: an OpenAI-compatible URL first, else an in-process GGUF; ``NotConfigured`` if neither."""
    if settings.chat_base_url:
        key: tuple[Any, ...] = (
            "openai", settings.chat_base_url, settings.chat_model, settings.chat_api_key, settings.backend_timeout_s
        )
        return _cached(
            key,
            lambda: OpenAICompatibleBackend(
                settings.chat_base_url,
                settings.chat_model,
                api_key=settings.chat_api_key,
                timeout_s=settings.backend_timeout_s,
            ),
        )
    if settings.llama_cpp_model_path:
        key = ("llama", settings.llama_cpp_model_path, settings.backend_timeout_s)
        return _cached(
            key, lambda: LlamaCppBackend(settings.llama_cpp_model_path, timeout_s=settings.backend_timeout_s)
        )
    raise NotConfigured(
        "no chat backend is configured: set LOOKLOOP_CHAT_BASE_URL (+ LOOKLOOP_CHAT_MODEL) to an OpenAI-compatible "
        "server, or LOOKLOOP_LLAMA_CPP_MODEL_PATH to a GGUF file"
    )


def vision_backend(settings: Settings) -> ChatBackend:
    """The vision-language backend (OpenAI-compatible with image parts); ``NotConfigured`` when unset."""
    if not settings.vision_base_url:
        raise NotConfigured(
            "no vision backend is configured: set LOOKLOOP_VISION_BASE_URL and LOOKLOOP_VISION_MODEL "
            "(e.g. Qwen-VL served by vLLM or Ollama)"
        )
    api_key = settings.vision_api_key or settings.chat_api_key
    key = ("vision", settings.vision_base_url, settings.vision_model, api_key, settings.backend_timeout_s)
    return _cached(
        key,
        lambda: OpenAICompatibleBackend(
            settings.vision_base_url,
            settings.vision_model,
            api_key=api_key,
            timeout_s=settings.backend_timeout_s,
            role="vision",
        ),
    )


def backend_status(settings: Settings) -> list[BackendStatus]:
    """Whether each backend is configured, without connecting to it."""
    out: list[BackendStatus] = []
    if settings.chat_base_url:
        out.append(BackendStatus("chat", True, "openai-compatible", settings.chat_model or "default",
                                 "OpenAI-compatible server"))
    elif settings.llama_cpp_model_path:
        if llama_cpp_available():
            out.append(BackendStatus("chat", True, "llama-cpp", settings.llama_cpp_model_path.rsplit("/", 1)[-1],
                                     "GGUF model in-process (llama-cpp-python)"))
        else:
            out.append(BackendStatus("chat", False, "llama-cpp", "",
                                     "a GGUF path is set but llama-cpp-python is not installed; install it or "
                                     "point LOOKLOOP_CHAT_BASE_URL at llama.cpp's llama-server"))
    else:
        out.append(BackendStatus("chat", False, "", "", "not configured"))
    if settings.vision_base_url:
        out.append(BackendStatus("vision", True, "openai-compatible", settings.vision_model or "default",
                                 "OpenAI-compatible vision-language server"))
    else:
        out.append(BackendStatus("vision", False, "", "", "not configured"))
    return out
