"""Which skill should answer a question: an embedding + n-gram intent classifier with out-of-scope detection.

``IntentRouter`` scores a question with a linear SVM over [word TF-IDF | char TF-IDF | w * sentence embedding]
(out-of-scope examples are an explicit class). A question is out of scope when the winner is that class or the
winning score is below a threshold chosen on a held-out part of the training data (never on evaluation data).
Corrections given to ``learn()`` go into a nearest-neighbour memory that overrides the model at once.
``KeywordRouter`` is the cheap regex fallback with the same protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lookloop.config import get_settings
from lookloop.domain import normalise_text
from lookloop.models.text import TextEmbedder, default_text_embedder
from lookloop.store.files import open_private

log = logging.getLogger(__name__)

OOS = "oos"
"""Training label for out-of-scope examples (``None`` is accepted too)."""

SKILL_INTENTS = ("identify", "price", "read", "translate", "remember", "recall", "notes", "colour", "describe")


@dataclass(frozen=True)
class RouteDecision:
    """One routing verdict. ``intent`` is None for out-of-scope asks (send them to a human or the chat backend)."""

    intent: str | None
    confidence: float
    scores: tuple[tuple[str, float], ...] = ()
    out_of_scope: bool = False
    source: str = "model"  # model | memory | keyword

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "confidence": self.confidence,
            "scores": [list(s) for s in self.scores],
            "out_of_scope": self.out_of_scope,
            "source": self.source,
        }


@runtime_checkable
class Router(Protocol):
    """Routes questions to intents; out-of-scope questions get ``intent=None``."""

    @property
    def intents(self) -> list[str]: ...

    def predict(self, texts: Sequence[str]) -> list[RouteDecision]: ...

    def route(self, text: str) -> RouteDecision: ...


class RouterFileError(ValueError):
    """A saved router that cannot be read, or was made with another embedder."""


# --- the learned router ---------------------------------------------------------------------------------


@dataclass
class _Tfidf:
    """A picklable-free TF-IDF block: vocabulary + idf, so a saved router needs no pickle."""

    analyzer: str
    ngram_range: tuple[int, int]
    vocabulary: dict[str, int] = field(default_factory=dict)
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _vec: Any = None

    def _make(self, vocabulary: dict[str, int] | None = None, min_df: int = 1) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer  # slow to import: loaded on first use

        return TfidfVectorizer(
            analyzer=self.analyzer,
            ngram_range=self.ngram_range,
            sublinear_tf=True,
            min_df=min_df,
            vocabulary=vocabulary,
            dtype=np.float32,
            lowercase=True,
        )

    def fit(self, texts: Sequence[str], min_df: int) -> _Tfidf:
        try:
            self._vec = self._make(min_df=min_df).fit(texts)
        except ValueError:  # too few texts for min_df
            self._vec = self._make(min_df=1).fit(texts)
        self.vocabulary = {str(k): int(v) for k, v in self._vec.vocabulary_.items()}
        self.idf = np.asarray(self._vec.idf_, dtype=np.float32)
        # transform with exactly what save() stores, so a loaded router scores identically
        return self.restore()

    def restore(self) -> _Tfidf:
        self._vec = self._make(vocabulary=self.vocabulary)
        self._vec.idf_ = self.idf
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        return self._vec.transform(texts)


class IntentRouter:
    """Intent classifier over sentence embeddings + TF-IDF n-grams, with out-of-scope detection and memory."""

    FORMAT = 1

    def __init__(
        self,
        embedder: TextEmbedder,
        *,
        c: float = 1.0,
        embedding_weight: float = 2.0,
        max_accuracy_drop: float = 0.005,
        memory_threshold: float = 0.92,
        min_confidence: float = 0.0,
        top_k: int = 3,
        seed: int = 0,
    ) -> None:
        self.embedder = embedder
        self.c = c
        self.embedding_weight = embedding_weight
        self.max_accuracy_drop = max_accuracy_drop
        self.memory_threshold = memory_threshold
        self.min_confidence = min_confidence
        self.top_k = top_k
        self.seed = seed
        self.classes: list[str] = []
        self.threshold = -np.inf
        self.temperature = 1.0
        self._coef = np.zeros((0, 0), dtype=np.float32)
        self._intercept = np.zeros(0, dtype=np.float32)
        self._word: _Tfidf | None = None
        self._char: _Tfidf | None = None
        self._texts: list[str] = []
        self._labels: list[str] = []
        self._mem_texts: list[str] = []
        self._mem_labels: list[str] = []
        self._mem_emb = np.zeros((0, embedder.dim), dtype=np.float32)
        self._lock = threading.RLock()
        self.fit_report: dict[str, float] = {}

    # -- features and fitting --

    @property
    def fitted(self) -> bool:
        return bool(self.classes)

    @property
    def intents(self) -> list[str]:
        learned = {lab for lab in self._mem_labels if lab != OOS}
        return sorted({c for c in self.classes if c != OOS} | learned)

    @staticmethod
    def _label(intent: str | None) -> str:
        return OOS if intent is None or intent == OOS else intent

    def _features(self, texts: Sequence[str], emb: np.ndarray, word: _Tfidf, char: _Tfidf) -> Any:
        from scipy.sparse import csr_matrix, hstack  # slow to import: loaded on first use

        return hstack([word.transform(texts), char.transform(texts), csr_matrix(emb * self.embedding_weight)]).tocsr()

    def _train(self, texts: Sequence[str], labels: Sequence[str], emb: np.ndarray) -> tuple[Any, _Tfidf, _Tfidf]:
        from sklearn.svm import LinearSVC  # slow to import: loaded on first use

        min_df = 2 if len(texts) >= 2000 else 1
        word = _Tfidf("word", (1, 2)).fit(texts, 1)
        char = _Tfidf("char_wb", (2, 5)).fit(texts, min_df)
        x = self._features(texts, emb, word, char)
        model = LinearSVC(C=self.c, random_state=self.seed).fit(x, list(labels))
        return model, word, char

    @staticmethod
    def _coef_of(model: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
        classes = [str(c) for c in model.classes_]
        coef = np.asarray(model.coef_, dtype=np.float32)
        intercept = np.asarray(model.intercept_, dtype=np.float32)
        if len(classes) == 2:  # binary LinearSVC keeps one row: score of classes[1]
            coef = np.vstack([-coef, coef])
            intercept = np.array([-intercept[0], intercept[0]], dtype=np.float32)
        return coef, intercept, classes

    def _select_threshold(self, texts: list[str], labels: np.ndarray, emb: np.ndarray) -> None:
        """Out-of-fold scores on training data pick the OOS threshold and the softmax temperature."""
        from sklearn.model_selection import StratifiedKFold  # slow to import: loaded on first use

        counts = {lab: int((labels == lab).sum()) for lab in set(labels.tolist())}
        n_splits = min(5, min(counts.values()))
        if n_splits < 2 or len(counts) < 2:
            self.threshold, self.temperature = -np.inf, 1.0
            return
        # one 80/20 split is enough on big sets; small sets use every fold
        max_folds = 1 if len(texts) > 5000 else n_splits
        skf = StratifiedKFold(n_splits=5 if max_folds == 1 else n_splits, shuffle=True, random_state=self.seed)
        all_scores: list[np.ndarray] = []
        all_true: list[np.ndarray] = []
        for fold, (fit_i, ho_i) in enumerate(skf.split(texts, labels)):
            if fold >= max_folds:
                break
            fit_texts = [texts[i] for i in fit_i]
            model, word, char = self._train(fit_texts, labels[fit_i].tolist(), emb[fit_i])
            coef, icpt, classes = self._coef_of(model)
            x = self._features([texts[i] for i in ho_i], emb[ho_i], word, char)
            raw = np.asarray(x @ coef.T) + icpt
            # align to the full class list (a fold may miss a class)
            full = np.full((len(ho_i), len(self.classes)), -10.0, dtype=np.float32)
            for j, c in enumerate(classes):
                full[:, self.classes.index(c)] = raw[:, j]
            all_scores.append(full)
            all_true.append(labels[ho_i])
        scores = np.vstack(all_scores)
        true = np.concatenate(all_true)
        self._pick_threshold(scores, true)
        self._pick_temperature(scores, true)

    def _decide(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        cls = np.array(self.classes, dtype=object)
        pred: np.ndarray = cls[scores.argmax(axis=1)].copy()
        pred[scores.max(axis=1) < threshold] = OOS
        return pred

    def _pick_threshold(self, scores: np.ndarray, true: np.ndarray) -> None:
        ins = true != OOS
        if not ins.any():
            self.threshold = -np.inf
            return
        base = float((self._decide(scores, -np.inf)[ins] == true[ins]).mean())
        best = -np.inf
        # the most eager threshold that costs at most max_accuracy_drop of in-scope accuracy
        for t in np.round(np.arange(-1.2, 0.61, 0.05), 2):
            acc = float((self._decide(scores, float(t))[ins] == true[ins]).mean())
            if acc >= base - self.max_accuracy_drop:
                best = float(t)
        self.threshold = best
        pred = self._decide(scores, best)
        self.fit_report = {
            "holdout_in_scope_accuracy": float((pred[ins] == true[ins]).mean()),
            "holdout_oos_recall": float((pred[~ins] == OOS).mean()) if (~ins).any() else float("nan"),
            "threshold": best,
        }

    def _pick_temperature(self, scores: np.ndarray, true: np.ndarray) -> None:
        idx = np.array([self.classes.index(t) for t in true])
        best_t, best_nll = 1.0, np.inf
        for t in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0):
            z = scores / t
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            nll = float(-logp[np.arange(len(idx)), idx].mean())
            if nll < best_nll:
                best_t, best_nll = t, nll
        self.temperature = best_t

    def fit(self, texts: Sequence[str], intents: Sequence[str | None]) -> IntentRouter:
        """Train on (text, intent) pairs; intent ``None`` or ``"oos"`` marks an out-of-scope example."""
        if len(texts) != len(intents):
            raise ValueError("texts and intents differ in length")
        if not texts:
            raise ValueError("no training examples")
        labels = [self._label(i) for i in intents]
        if len({lab for lab in labels if lab != OOS}) < 1:
            raise ValueError("need at least one in-scope intent")
        texts = [str(t) for t in texts]
        emb = self.embedder.embed(texts)
        with self._lock:
            self.classes = sorted(set(labels))
            if len(self.classes) == 1:
                # one intent and no OOS examples: nothing to contrast with, so add a blank OOS anchor
                texts, labels = [*texts, ""], [*labels, OOS]
                emb = np.vstack([emb, self.embedder.embed([""])])
                self.classes = sorted(set(labels))
            self._select_threshold(texts, np.array(labels, dtype=object), emb)
            model, self._word, self._char = self._train(texts, labels, emb)
            self._coef, self._intercept, self.classes = self._coef_of(model)
            self._texts, self._labels = list(texts), list(labels)
        return self

    def refit(self) -> IntentRouter:
        """Retrain on the training set plus every correction ``learn()`` has received."""
        with self._lock:
            texts = self._texts + self._mem_texts
            labels: list[str | None] = [*self._labels, *self._mem_labels]
        return self.fit(texts, labels)

    # -- prediction --

    def decision_scores(self, texts: Sequence[str], emb: np.ndarray | None = None) -> np.ndarray:
        """Raw per-class SVM scores (columns follow ``classes``)."""
        if not self.fitted or self._word is None or self._char is None:
            raise RuntimeError("router is not fitted")
        if emb is None:
            emb = self.embedder.embed(list(texts))
        x = self._features(list(texts), emb, self._word, self._char)
        scores: np.ndarray = np.asarray(x @ self._coef.T) + self._intercept
        return scores

    def predict(self, texts: Sequence[str]) -> list[RouteDecision]:
        texts = [str(t) for t in texts]
        if not texts:
            return []
        emb = self.embedder.embed(texts)
        with self._lock:
            scores = self.decision_scores(texts, emb)
            mem_hits = self._memory_lookup(texts, emb)
            out: list[RouteDecision] = []
            for i in range(len(texts)):
                if mem_hits[i] is not None:
                    out.append(mem_hits[i])  # type: ignore[arg-type]
                    continue
                out.append(self._decision_from(scores[i]))
        return out

    def route(self, text: str) -> RouteDecision:
        return self.predict([text])[0]

    def _decision_from(self, row: np.ndarray) -> RouteDecision:
        z = row / self.temperature
        p = np.exp(z - z.max())
        p = p / p.sum()
        order = np.argsort(-p)
        top = tuple((self.classes[j], float(p[j])) for j in order[: self.top_k])
        best = self.classes[int(row.argmax())]
        oos_p = float(p[self.classes.index(OOS)]) if OOS in self.classes else 0.0
        if best == OOS or float(row.max()) < self.threshold or float(p.max()) < self.min_confidence:
            # confidence that it is out of scope: mass not on any in-scope intent's winner
            in_best = max((float(p[j]) for j, c in enumerate(self.classes) if c != OOS), default=0.0)
            return RouteDecision(None, max(oos_p, 1.0 - in_best), top, True)
        return RouteDecision(best, float(p[self.classes.index(best)]), top, False)

    # -- corrections --

    def learn(self, text: str, intent: str | None) -> None:
        """Record a corrected route; it takes effect on the next call (memory), and in ``refit()``."""
        label = self._label(intent)
        emb = self.embedder.embed([str(text)])
        with self._lock:
            key = normalise_text(text)
            # a second correction of the same text replaces the first
            for i, t in enumerate(self._mem_texts):
                if normalise_text(t) == key:
                    self._mem_labels[i] = label
                    self._mem_emb[i] = emb[0]
                    return
            self._mem_texts.append(str(text))
            self._mem_labels.append(label)
            self._mem_emb = np.vstack([self._mem_emb, emb])

    def forget(self, texts: Sequence[str]) -> int:
        """Removes corrections of these texts from the memory (delete-my-data); returns how many went."""
        keys = {normalise_text(t) for t in texts}
        with self._lock:
            keep = [i for i, t in enumerate(self._mem_texts) if normalise_text(t) not in keys]
            removed = len(self._mem_texts) - len(keep)
            if removed:
                self._mem_texts = [self._mem_texts[i] for i in keep]
                self._mem_labels = [self._mem_labels[i] for i in keep]
                self._mem_emb = self._mem_emb[keep]
        return removed

    def _memory_lookup(self, texts: Sequence[str], emb: np.ndarray) -> list[RouteDecision | None]:
        out: list[RouteDecision | None] = [None] * len(texts)
        if not self._mem_texts:
            return out
        keys = {normalise_text(t): i for i, t in enumerate(self._mem_texts)}
        sims = emb @ self._mem_emb.T
        for i, text in enumerate(texts):
            j = keys.get(normalise_text(text))
            sim = 1.0 if j is not None else float(sims[i].max())
            if j is None:
                j = int(sims[i].argmax())
            if sim >= self.memory_threshold:
                label = self._mem_labels[j]
                intent = None if label == OOS else label
                out[i] = RouteDecision(intent, sim, ((label, sim),), intent is None, "memory")
        return out

    # -- persistence (npz + JSON, no pickle) --

    def save(self, path: Path) -> None:
        if not self.fitted or self._word is None or self._char is None:
            raise RuntimeError("router is not fitted")
        meta = {
            "format": self.FORMAT,
            "embedder": self.embedder.version,
            "classes": self.classes,
            "threshold": None if not np.isfinite(self.threshold) else self.threshold,
            "temperature": self.temperature,
            "params": {
                "c": self.c,
                "embedding_weight": self.embedding_weight,
                "max_accuracy_drop": self.max_accuracy_drop,
                "memory_threshold": self.memory_threshold,
                "min_confidence": self.min_confidence,
                "top_k": self.top_k,
                "seed": self.seed,
            },
            "word_vocab": self._word.vocabulary,
            "char_vocab": self._char.vocabulary,
            "texts": self._texts,
            "labels": self._labels,
            "mem_texts": self._mem_texts,
            "mem_labels": self._mem_labels,
            "fit_report": self.fit_report,
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open_private(tmp) as fh:  # it may hold wearers' words (corrections): 0600 in a 0700 directory
            np.savez_compressed(
                fh,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                coef=self._coef,
                intercept=self._intercept,
                word_idf=self._word.idf,
                char_idf=self._char.idf,
                mem_emb=self._mem_emb,
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, embedder: TextEmbedder) -> IntentRouter:
        """Load a router saved by ``save``; the embedder must be the one it was trained with."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                arrays = {k: data[k] for k in ("coef", "intercept", "word_idf", "char_idf", "mem_emb")}
        except (OSError, ValueError, KeyError) as exc:
            raise RouterFileError(f"{path}: not a saved intent router ({exc})") from exc
        if meta.get("format") != cls.FORMAT:
            raise RouterFileError(f"{path}: unsupported router format {meta.get('format')}")
        if meta["embedder"] != embedder.version:
            raise RouterFileError(f"{path}: trained with embedder {meta['embedder']}, not {embedder.version}")
        router = cls(embedder, **meta["params"])
        router.classes = list(meta["classes"])
        router.threshold = -np.inf if meta["threshold"] is None else float(meta["threshold"])
        router.temperature = float(meta["temperature"])
        router._coef = arrays["coef"]
        router._intercept = arrays["intercept"]
        router._word = _Tfidf("word", (1, 2), meta["word_vocab"], arrays["word_idf"]).restore()
        router._char = _Tfidf("char_wb", (2, 5), meta["char_vocab"], arrays["char_idf"]).restore()
        router._texts, router._labels = list(meta["texts"]), list(meta["labels"])
        router._mem_texts, router._mem_labels = list(meta["mem_texts"]), list(meta["mem_labels"])
        router._mem_emb = arrays["mem_emb"].astype(np.float32).reshape(-1, embedder.dim)
        router.fit_report = dict(meta.get("fit_report", {}))
        return router


# --- the keyword fallback -------------------------------------------------------------------------------

# Order matters: the first matching rule wins (recall before remember, price/colour before identify).
_KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    (
        "recall",
        "|".join(
            [
                r"\bwhere (did|have) i (park|put|leave|left)",
                r"\bwhere('s| is| are) my\b",
                r"\bwhat did i (ask you to )?remember\b",
                r"\bremind me where\b",
                r"\bdo you remember where\b",
                r"我.{0,6}(停|放|把).{0,8}(哪|哪里|哪儿)",
                r"在哪(里|儿)?[？?]?$",
            ]
        ),
    ),
    (
        "remember",
        "|".join(
            [
                r"\bremember (this|that|where|my|i)\b",
                r"\b(save|note|mark) (this|that) (spot|place|location)\b",
                r"\bdon'?t (let me )?forget\b",
                r"记住|记一下这|帮我记",
            ]
        ),
    ),
    (
        "notes",
        "|".join(
            [
                r"\b(take|start taking|make) (some )?notes?\b",
                r"\bsummari[sz]e\b|\bsummary\b|\bminutes\b",
                r"\btranscribe\b",
                r"记笔记|做笔记|会议(纪要|记录|总结)|总结一下",
            ]
        ),
    ),
    (
        "translate",
        "|".join(
            [
                r"\btranslat",
                r"\bin (english|chinese|mandarin|spanish|french|german|swedish|japanese)\b",
                r"\bwhat does (this|that|it) (say|mean) in\b",
                r"翻译|用(英语|英文|中文)怎么说|什么意思",
            ]
        ),
    ),
    (
        "price",
        "|".join(
            [
                r"\bhow much\b|\bprice\b|\bcost(s)?\b|\bexpensive\b|\bcheap\b|\bon sale\b",
                r"多少钱|价格|价钱|贵不贵|便宜",
            ]
        ),
    ),
    (
        "colour",
        "|".join(
            [
                r"\bcolou?rs?\b|\bwhat shade\b",
                r"\bis (this|it) (red|blue|green|black|white|yellow|brown|pink)\b",
                r"颜色|什么色",
            ]
        ),
    ),
    (
        "read",
        "|".join(
            [
                r"\bread\b",
                r"\bwhat does (this|the|that|it)( \w+)? say\b",
                r"\bwhat('s| is) written\b",
                r"\btext\b",
                r"读|念一下|写(的|了)什么|上面写",
            ]
        ),
    ),
    (
        "describe",
        "|".join(
            [
                r"\bdescribe\b",
                r"\bwhat (do|can) you see\b",
                r"\bwhat('s| is) (around|in front of) me\b",
                r"\bwhat('s| is) (happening|going on)\b",
                r"\blook around\b",
                r"\bscene\b",
                r"描述|你看到了?什么|周围有什么|前面有什么",
            ]
        ),
    ),
    (
        "identify",
        "|".join(
            [
                r"\bwhat('s| is) (this|that|it)\b",
                r"\bwhat (kind|type|sort|brand) of\b",
                r"\bidentify\b",
                r"\bwhat am i (holding|looking at)\b",
                r"\bwhich (fruit|vegetable|product|brand)\b",
                r"这是什么|那是什么|这是啥|这个是什么|识别",
            ]
        ),
    ),
)


class KeywordRouter:
    """Regex rules (English + Chinese) over the skill intents; no match means out of scope."""

    def __init__(self, rules: Sequence[tuple[str, str]] = _KEYWORD_RULES, confidence: float = 0.6) -> None:
        self._rules = [(intent, re.compile(pattern, re.IGNORECASE)) for intent, pattern in rules]
        self.confidence = confidence

    @property
    def intents(self) -> list[str]:
        return sorted({i for i, _ in self._rules})

    def route(self, text: str) -> RouteDecision:
        norm = normalise_text(text)
        for intent, rx in self._rules:
            if rx.search(norm):
                return RouteDecision(intent, self.confidence, ((intent, self.confidence),), False, "keyword")
        return RouteDecision(None, self.confidence, (), True, "keyword")

    def predict(self, texts: Sequence[str]) -> list[RouteDecision]:
        return [self.route(t) for t in texts]


# --- the product's skill router -------------------------------------------------------------------------


def load_seed_examples() -> list[tuple[str, str]]:
    """The shipped seed phrasings: (text, intent) with intent ``oos`` for out-of-scope examples."""
    raw = resources.files("lookloop").joinpath("data/intents_seed.jsonl").read_text(encoding="utf-8")
    out: list[tuple[str, str]] = []
    for line in raw.splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((str(row["text"]), str(row["intent"])))
    return out


def _clinc_out_of_scope(data_dir: Path, per_intent: int = 3) -> list[str]:
    """CLINC150 ``oos_train`` plus a few queries of each CLINC intent the glasses have no skill for."""
    path = data_dir / "clinc150" / "clinc150_train_val.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    # CLINC intents that overlap a skill would teach the wrong thing
    overlap = {
        "translate",
        "reminder",
        "reminder_update",
        "todo_list",
        "todo_list_update",
        "shopping_list",
        "shopping_list_update",
        "spelling",
        "definition",
    }
    texts = [str(t) for t, _ in data.get("oos_train", [])]
    seen: dict[str, int] = {}
    for text, intent in data.get("train", []):
        if intent in overlap or seen.get(intent, 0) >= per_intent:
            continue
        seen[intent] = seen.get(intent, 0) + 1
        texts.append(str(text))
    return texts


def build_skill_router(embedder: TextEmbedder, data_dir: Path | None = None) -> IntentRouter:
    """Fit the skill router on the seed phrasings (+ CLINC150 out-of-scope text when the data is present)."""
    seed = load_seed_examples()
    texts = [t for t, _ in seed]
    labels: list[str | None] = [i for _, i in seed]
    if data_dir is not None:
        extra = _clinc_out_of_scope(data_dir)
        texts += extra
        labels += [OOS] * len(extra)
    # a wrong skill costs the wearer more than a hand-off to a human, hence the confidence floor
    return IntentRouter(embedder, max_accuracy_drop=0.0, min_confidence=0.5).fit(texts, labels)


def default_skill_router(settings: Any = None, embedder: TextEmbedder | None = None) -> IntentRouter:
    """The product's skill router, built once and cached under ``settings.model_cache_dir``."""

    settings = settings or get_settings()
    cache_dir = Path(settings.model_cache_dir)
    emb = embedder or default_text_embedder(cache_dir)
    seed_text = resources.files("lookloop").joinpath("data/intents_seed.jsonl").read_bytes()
    clinc = Path(settings.data_dir) / "clinc150" / "clinc150_train_val.json"
    # the key changes when the seeds, the embedder or the presence of CLINC150 change
    key = seed_text + emb.version.encode() + str(clinc.exists()).encode() + str(IntentRouter.FORMAT).encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    path = cache_dir / f"skill-router-{digest}.npz"
    if path.exists():
        try:
            return IntentRouter.load(path, emb)
        except RouterFileError as exc:
            log.warning("rebuilding skill router: %s", exc)
    router = build_skill_router(emb, Path(settings.data_dir))
    try:
        router.save(path)
    except OSError as exc:  # a read-only var/ must not stop routing
        log.warning("could not cache the skill router at %s: %s", path, exc)
    return router
