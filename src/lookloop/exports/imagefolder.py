"""An image-folder tree (``<class>/<file>``) for training classifiers, with a ``metadata.csv``.

The layout is what torchvision's ``ImageFolder`` and the Hugging Face ``imagefolder`` loader read.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path

from sqlalchemy import select

from lookloop.exports.episodes import ExportSource, extension, frame_of, load_episodes
from lookloop.exports.output import ExportResult, prepare_dir, staged_dir
from lookloop.models.embcache import ProgressFn
from lookloop.store.tables import LabelRow

_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def class_dir(label: str) -> str:
    """A label as a safe folder name (no separators, no leading dots)."""
    name = _UNSAFE.sub("_", label.strip()).strip(" .")
    return name[:120] or "unlabelled"


def export_imagefolder(
    system: ExportSource,
    out: Path,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    skill: str = "identify",
    imports: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Labelled frames of ``skill`` asks under ``out/<label>/``; ``imports`` adds imported labelled photos."""
    prepare_dir(out, force=force)
    with staged_dir(out) as staging:
        rows = _write_tree(system, staging.folder, since=since, until=until, skill=skill, progress=progress)
        from_asks = len(rows)
        if imports:
            rows += _write_imports(system, staging.folder, skill)
        with (staging.folder / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "label", "ask_id", "label_source", "model_version"])
            writer.writerows(rows)
    return ExportResult(out, len(rows), {
        "classes": len({r[1] for r in rows}), "from_asks": from_asks, "imported": len(rows) - from_asks,
    })


Row = tuple[str, str, str, str, str]  # file, label, ask_id, source, model_version


def _write_tree(system: ExportSource, root: Path, *, since: dt.datetime | None, until: dt.datetime | None,
                skill: str, progress: ProgressFn | None) -> list[Row]:
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    episodes = load_episodes(system, since=since, until=until, labelled_only=True, skill=skill)
    for n, ep in enumerate(episodes):
        if progress:
            progress("writing images", n, len(episodes))
        lab = ep.label
        if lab is None or not ep.frame_sha or (ep.frame_sha, lab.value) in seen:
            continue
        data = frame_of(system, ep)
        if data is None:
            continue
        folder = root / class_dir(lab.value)
        folder.mkdir(exist_ok=True)
        path = folder / f"{ep.ask_id}{extension(ep.frame_media_type)}"
        path.write_bytes(data)
        seen.add((ep.frame_sha, lab.value))
        rows.append((path.relative_to(root).as_posix(), lab.value, ep.ask_id, lab.source, ep.model_version))
    return rows


def _write_imports(system: ExportSource, root: Path, skill: str) -> list[Row]:
    rows: list[Row] = []
    with system.db.session() as s:
        imported = s.execute(
            select(LabelRow.image_path, LabelRow.value)
            .where(LabelRow.image_path.is_not(None), LabelRow.skill == skill)
            .order_by(LabelRow.created_at, LabelRow.id)
        ).all()
    for image_path, value in imported:
        src = Path(str(image_path))
        if not src.is_file():
            continue
        folder = root / class_dir(value)
        folder.mkdir(exist_ok=True)
        name = "import-" + hashlib.sha1(str(src).encode()).hexdigest()[:16] + (src.suffix.lower() or ".jpg")
        shutil.copyfile(src, folder / name)
        rows.append(((folder / name).relative_to(root).as_posix(), value, "", "import", ""))
    return rows
