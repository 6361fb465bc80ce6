"""Which skill answers a question: the learned intent router, a per-question cache, and people's corrections."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lookloop.config import Settings
from lookloop.domain import normalise_text
from lookloop.errors import BadInput
from lookloop.models.text import default_text_embedder
from lookloop.skills.router import IntentRouter, KeywordRouter, Router, default_skill_router

log = logging.getLogger("lookloop.routing")

_CACHE_MAX = 4096


class SkillRouting:
    """Routes questions to skill names; corrections are learnt at once and survive restarts."""

    def __init__(self, settings: Settings, skill_names: Callable[[], list[str]]) -> None:
        self.settings = settings
        self._skill_names = skill_names
        self._lock = threading.Lock()
        self._router: Router | None = None
        self._routes: dict[str, str] = {}
        self.corrections_path = settings.resolved_var_dir / "router-corrections.npz"

    @property
    def router(self) -> Router:
        """The learned intent router (MiniLM + linear model with out-of-scope detection), built once."""
        with self._lock:
            if self._router is None:
                try:
                    self._router = default_skill_router(self.settings)
                    if self.corrections_path.exists():
                        # Routes corrected by people survive restarts.
                        emb = default_text_embedder(self.settings.model_cache_dir)
                        self._router = IntentRouter.load(self.corrections_path, emb)
                except Exception as exc:  # noqa: BLE001 - the keyword router still routes the common asks
                    log.warning("learned router unavailable (%s); routing by keywords", exc)
                    self._router = KeywordRouter()
            return self._router

    def route(self, question: str, has_frame: bool) -> str | None:
        """The skill for a question, or None when it is out of scope (a human answers it)."""
        key = normalise_text(question)
        cached = self._routes.get(key)
        if cached is not None:
            return cached or None
        intent = self.router.route(question).intent
        if intent is None:
            # The learned model is unsure: the explicit keyword rules may still know the command.
            intent = KeywordRouter().route(question).intent
        if len(self._routes) > _CACHE_MAX:
            self._routes.clear()
        self._routes[key] = intent or ""
        return intent

    def correct(self, question: str, skill: str | None) -> None:
        """A corrected route: learned at once, persisted with the router."""
        names = self._skill_names()
        if skill is not None and skill not in names:
            raise BadInput(f"unknown skill {skill!r}; available: {', '.join(sorted(names))}")
        router = self.router
        if isinstance(router, IntentRouter):
            router.learn(question, skill)
            try:
                router.save(self.corrections_path)
            except OSError as exc:
                log.warning("could not save the corrected router: %s", exc)
        self._routes.pop(normalise_text(question), None)

    def forget(self, questions: list[str]) -> int:
        """Removes people's corrections of these questions, in memory and on disk (delete-my-data)."""
        if not questions or not self.corrections_path.exists():
            return 0
        router = self.router
        if not isinstance(router, IntentRouter):
            return 0
        removed = router.forget(questions)
        if removed:
            router.save(self.corrections_path)
        for question in questions:
            self._routes.pop(normalise_text(question), None)
        return removed
