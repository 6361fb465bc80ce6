"""``lookloop bench redact``: face recall/precision and time per frame of the bystander-face detectors.

Ground truth comes from dlib imglab XML or COCO JSON. ``--make-fixture DIR`` writes a real + composite set
built only from images that ship in packages (scikit-image, Debian's opencv-doc) and, if present, Grocery
photos as backgrounds.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lookloop.config import get_settings
from lookloop.models.faces import MODES, Box, FaceDetector, available_detectors, iou, make_detector

IOU_MATCH = 0.3
OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")


class GroundTruthError(ValueError):
    """A boxes file that cannot be read as imglab XML or COCO JSON."""


@dataclass(frozen=True)
class GtBox:
    x: int
    y: int
    w: int
    h: int
    ignore: bool = False

    def box(self) -> Box:
        return Box(self.x, self.y, self.w, self.h)


@dataclass
class GtImage:
    file: str
    boxes: list[GtBox] = field(default_factory=list)


# --- ground-truth formats -------------------------------------------------------------------------------


def parse_imglab(path: Path) -> list[GtImage]:
    """dlib imglab XML: ``<images><image file=…><box top left width height [ignore='1']/>``."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise GroundTruthError(f"{path}: not readable imglab XML ({exc})") from exc
    images_el = root if root.tag == "images" else root.find("images")
    if images_el is None:
        raise GroundTruthError(f"{path}: no <images> element")
    out: list[GtImage] = []
    for im in images_el.findall("image"):
        file = im.get("file")
        if not file:
            raise GroundTruthError(f"{path}: an <image> has no file attribute")
        gt = GtImage(file=file)
        for b in im.findall("box"):
            try:
                x, y = int(float(b.get("left", ""))), int(float(b.get("top", "")))
                w, h = int(float(b.get("width", ""))), int(float(b.get("height", "")))
            except ValueError as exc:
                raise GroundTruthError(f"{path}: box in {file} lacks numeric top/left/width/height") from exc
            gt.boxes.append(GtBox(x, y, w, h, ignore=b.get("ignore", "0") in ("1", "true", "True")))
        out.append(gt)
    return out


def parse_coco(path: Path, category: str | None = "face") -> list[GtImage]:
    """COCO JSON: ``images`` (id, file_name), ``annotations`` (image_id, bbox [x,y,w,h], category_id,
    iscrowd/ignore), ``categories``. Only the ``category`` class counts when it exists."""
    try:
        doc = json.loads(path.read_text())
        images = {int(im["id"]): GtImage(file=str(im["file_name"])) for im in doc["images"]}
        cats = {int(c["id"]): str(c["name"]) for c in doc.get("categories", [])}
        wanted = {cid for cid, name in cats.items() if category and name == category} or set(cats)
        for a in doc["annotations"]:
            if cats and int(a.get("category_id", -1)) not in wanted:
                continue
            x, y, w, h = (int(round(float(v))) for v in a["bbox"])
            ignore = bool(a.get("iscrowd", 0)) or bool(a.get("ignore", 0))
            images[int(a["image_id"])].boxes.append(GtBox(x, y, w, h, ignore))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GroundTruthError(f"{path}: not readable COCO JSON ({type(exc).__name__}: {exc})") from exc
    return list(images.values())


def load_ground_truth(path: Path) -> list[GtImage]:
    if not path.is_file():
        raise GroundTruthError(f"{path}: no such file")
    head = path.read_bytes()[:200].lstrip()
    return parse_imglab(path) if head.startswith(b"<") else parse_coco(path)


def write_imglab(path: Path, images: list[GtImage]) -> None:
    root = ET.Element("dataset")
    ET.SubElement(root, "name").text = "lookloop faces"
    ims = ET.SubElement(root, "images")
    for gt in images:
        el = ET.SubElement(ims, "image", file=gt.file)
        for b in gt.boxes:
            attrs = {"top": str(b.y), "left": str(b.x), "width": str(b.w), "height": str(b.h)}
            if b.ignore:
                attrs["ignore"] = "1"
            ET.SubElement(el, "box", attrs)
    ET.indent(root)
    path.write_text(ET.tostring(root, encoding="unicode") + "\n")


def write_coco(path: Path, images: list[GtImage], sizes: dict[str, tuple[int, int]]) -> None:
    doc: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "face"}]}
    ann_id = 1
    for i, gt in enumerate(images, start=1):
        w, h = sizes[gt.file]
        doc["images"].append({"id": i, "file_name": gt.file, "width": w, "height": h})
        for b in gt.boxes:
            doc["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [b.x, b.y, b.w, b.h],
                    "area": b.w * b.h,
                    "iscrowd": int(b.ignore),
                }
            )
            ann_id += 1
    path.write_text(json.dumps(doc, indent=1) + "\n")


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class ImageScore:
    n_faces: int = 0
    found: int = 0
    false_pos: int = 0
    n_det: int = 0


def score_image(gt: list[GtBox], dets: list[Box], *, min_size: int = 24) -> ImageScore:
    """Greedy IoU matching (best pairs first). Ignored or too-small faces neither count as misses nor make
    their detections false positives."""
    counted = [not b.ignore and min(b.w, b.h) >= min_size for b in gt]
    pairs = sorted(
        ((iou(g.box(), d), gi, di) for gi, g in enumerate(gt) for di, d in enumerate(dets)),
        reverse=True,
    )
    gt_used: set[int] = set()
    det_match: dict[int, int] = {}
    for overlap, gi, di in pairs:
        if overlap < IOU_MATCH:
            break
        if gi in gt_used or di in det_match:
            continue
        gt_used.add(gi)
        det_match[di] = gi
    found = false_pos = 0
    for di, d in enumerate(dets):
        hit = det_match.get(di)
        if hit is not None and counted[hit]:
            found += 1
        elif hit is not None or any(
            not counted[k] and iou(g.box(), d) >= IOU_MATCH for k, g in enumerate(gt)
        ):
            continue  # on an ignored or too-small face: neither a hit nor an error
        else:
            false_pos += 1
    return ImageScore(n_faces=sum(counted), found=found, false_pos=false_pos, n_det=len(dets))


@dataclass
class BenchResult:
    n_images: int
    n_faces: int
    found: int
    false_pos: int
    times_ms: list[float]
    ms_720p: float
    detector: str

    def figures(self) -> dict[str, Any]:
        tp = self.found
        ts = sorted(self.times_ms) or [0.0]
        p95 = ts[min(len(ts) - 1, math.ceil(0.95 * len(ts)) - 1)]
        return {
            "face_recall": round(tp / self.n_faces, 4) if self.n_faces else 0.0,
            "face_precision": round(tp / (tp + self.false_pos), 4) if tp + self.false_pos else 0.0,
            "n_faces": self.n_faces,
            "n_found": tp,
            "n_false_positives": self.false_pos,
            "n_images": self.n_images,
            "ms_per_frame_mean": round(statistics.fmean(ts), 2),
            "ms_per_frame_p50": round(statistics.median(ts), 2),
            "ms_per_frame_p95": round(p95, 2),
            "ms_per_720p_frame": round(self.ms_720p, 2),
            "detector": self.detector,
        }


def run_bench(
    images_dir: Path,
    gt: list[GtImage],
    detector: FaceDetector,
    *,
    min_size: int = 24,
    progress: Any = None,
) -> BenchResult:
    import cv2  # OpenCV's native libraries load on first use

    total = ImageScore()
    times: list[float] = []
    times_720: list[float] = []
    if gt:
        # One untimed call: the first one pays for loading and thread start-up.
        warm = cv2.imread(str(images_dir / gt[0].file), cv2.IMREAD_COLOR)
        if warm is not None:
            detector.detect(warm)
    for gimg in gt:
        path = images_dir / gimg.file
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise GroundTruthError(f"{path}: image missing or unreadable")
        t0 = time.perf_counter()
        dets = detector.detect(image)
        dt = (time.perf_counter() - t0) * 1000.0
        times.append(dt)
        if image.shape[:2] == (720, 1280):
            times_720.append(dt)
        s = score_image(gimg.boxes, dets, min_size=min_size)
        total.n_faces += s.n_faces
        total.found += s.found
        total.false_pos += s.false_pos
        if progress is not None:
            progress()
    if not times_720:
        # No 720p image in the set: time a real image resized to 1280x720.
        first = cv2.imread(str(images_dir / gt[0].file), cv2.IMREAD_COLOR) if gt else None
        frame = cv2.resize(first, (1280, 720)) if first is not None else np.zeros((720, 1280, 3), np.uint8)
        for _ in range(3):
            t0 = time.perf_counter()
            detector.detect(frame)
            times_720.append((time.perf_counter() - t0) * 1000.0)
    return BenchResult(
        n_images=len(gt),
        n_faces=total.n_faces,
        found=total.found,
        false_pos=total.false_pos,
        times_ms=times,
        ms_720p=statistics.median(times_720),
        detector=detector.version,
    )


# --- fixture --------------------------------------------------------------------------------------------

# Hand-annotated from the images (viewed at 1x/2x). Messi's crowd faces are blurred, mostly < 24 px: ignored.
_REAL: dict[str, list[GtBox]] = {
    "astronaut.png": [GtBox(176, 60, 94, 118)],
    "camera.png": [GtBox(192, 110, 64, 82)],
    "messi5.jpg": [
        GtBox(224, 92, 32, 40),
        *(
            GtBox(x, y, w, h, ignore=True)
            for x, y, w, h in [
                (202, 8, 17, 21),
                (339, 130, 20, 25),
                (314, 37, 20, 25),
                (176, 63, 18, 25),
                (301, 39, 20, 26),
                (138, 52, 16, 20),
                (15, 93, 14, 18),
                (28, 213, 12, 14),
                (147, 135, 22, 30),
                (281, 1, 16, 18),
                (323, 2, 13, 14),
            ]
        ),
    ],
}


def _real_images() -> dict[str, np.ndarray]:
    import cv2  # OpenCV's native libraries load on first use
    import skimage.data  # slow to import: loaded on first use

    out = {
        "astronaut.png": cv2.cvtColor(np.asarray(skimage.data.astronaut()), cv2.COLOR_RGB2BGR),  # type: ignore[no-untyped-call]
        "camera.png": cv2.cvtColor(np.asarray(skimage.data.camera()), cv2.COLOR_GRAY2BGR),  # type: ignore[no-untyped-call]
    }
    messi = cv2.imread(str(OPENCV_SAMPLES / "messi5.jpg"), cv2.IMREAD_COLOR)
    if messi is not None:
        out["messi5.jpg"] = messi
    return out


def _lfw_faces(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    import cv2  # OpenCV's native libraries load on first use
    import skimage.data  # slow to import: loaded on first use

    faces = np.asarray(skimage.data.lfw_subset())[:100]  # type: ignore[no-untyped-call]  # first 100: faces
    picks = rng.choice(len(faces), size=min(n, len(faces)), replace=False)
    return [cv2.cvtColor((faces[i] * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR) for i in picks]


def _backgrounds(grocery_dir: Path | None, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    import cv2  # OpenCV's native libraries load on first use

    files: list[Path] = []
    if grocery_dir is not None and grocery_dir.is_dir():
        files = sorted(p for p in grocery_dir.rglob("*.jpg"))
    out = []
    for i in range(n):
        img = None
        if files:
            img = cv2.imread(str(files[int(rng.integers(len(files)))]), cv2.IMREAD_COLOR)
        if img is None:
            # Smooth noise stands in for a shelf when no Grocery photos are around.
            small = rng.integers(40, 220, size=(9, 16, 3), dtype=np.uint8)
            img = cv2.resize(small, (1280, 720), interpolation=cv2.INTER_CUBIC)
            img = np.clip(img.astype(np.int16) + rng.integers(0, 20, size=img.shape), 0, 255).astype(np.uint8)
        out.append(cv2.resize(img, (1280, 720), interpolation=cv2.INTER_AREA))
        del i
    return out


def _paste(
    canvas: np.ndarray, src: np.ndarray, face: GtBox, *, x: int, y: int, size: int, flip: bool, angle: float
) -> GtBox:
    """Pastes ``src``'s face with a margin of head/background around it, so the face is ``size`` px wide at
    (x, y); returns the face's box on the canvas."""
    import cv2  # OpenCV's native libraries load on first use

    margin = 0.5
    mx, my = int(face.w * margin), int(face.h * margin)
    x0, y0 = max(0, face.x - mx), max(0, face.y - my)
    x1, y1 = min(src.shape[1], face.x + face.w + mx), min(src.shape[0], face.y + face.h + my)
    crop = src[y0:y1, x0:x1]
    fx, fy = face.x - x0, face.y - y0
    if flip:
        crop = crop[:, ::-1]
        fx = crop.shape[1] - fx - face.w
    s = size / face.w
    crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    ch, cw = crop.shape[:2]
    fx, fy, fw, fh = int(fx * s), int(fy * s), int(face.w * s), int(face.h * s)
    if angle:
        rot = cv2.getRotationMatrix2D((fx + fw / 2, fy + fh / 2), angle, 1.0)
        crop = cv2.warpAffine(crop, rot, (cw, ch), borderMode=cv2.BORDER_REFLECT)
    # A feathered ellipse blends the patch in, like a head in a scene rather than a pasted square.
    mask = np.zeros((ch, cw), np.float32)
    cv2.ellipse(mask, (cw // 2, ch // 2), (max(1, cw // 2 - 1), max(1, ch // 2 - 1)), 0, 0, 360, 1.0, -1)
    k = max(3, (min(cw, ch) // 6) | 1)
    soft = np.asarray(cv2.GaussianBlur(mask, (k, k), 0))[:, :, None]
    ox, oy = x - fx, y - fy
    H, W = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, ox), max(0, oy), min(W, ox + cw), min(H, oy + ch)
    patch = crop[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox].astype(np.float32)
    m = soft[cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
    region = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    canvas[cy0:cy1, cx0:cx1] = (m * patch + (1 - m) * region).clip(0, 255).astype(np.uint8)
    return GtBox(x, y, fw, fh)


def make_fixture(
    out_dir: Path,
    *,
    grocery_dir: Path | None = None,
    n_composites: int = 12,
    faces_per_image: int = 8,
    seed: int = 0,
    tight_share: float = 0.3,
) -> tuple[Path, Path, Path]:
    """Writes ``images/`` (real photos + 1280x720 composites), ``boxes.xml`` (imglab) and ``boxes.json``
    (COCO); returns (images_dir, xml, json). ``tight_share`` of the pasted faces are LFW's tight crops, the
    rest real faces with their hair and shoulders, flipped and turned up to 20 degrees."""
    import cv2  # OpenCV's native libraries load on first use

    rng = np.random.default_rng(seed)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    gts: list[GtImage] = []
    sizes: dict[str, tuple[int, int]] = {}
    real = _real_images()
    for name, img in real.items():
        cv2.imwrite(str(images_dir / name), img)
        gts.append(GtImage(name, list(_REAL[name])))
        sizes[name] = (img.shape[1], img.shape[0])
    context = [(real[n], _REAL[n][0], 80) for n in real]
    # LFW's tight 25x25 face crops (scikit-image): no hair or shoulders around them, so they are the hard
    # part of the set; pasted at 24-48 px only, as they have no detail to give at larger sizes.
    tight = [(lfw, GtBox(0, 0, 25, 25), 48) for lfw in _lfw_faces(rng, 30)]
    for i, bg in enumerate(_backgrounds(grocery_dir, n_composites, rng)):
        canvas = bg.copy()
        boxes: list[GtBox] = []
        tries = 0
        while len(boxes) < faces_per_image and tries < 200:
            tries += 1
            pool = tight if rng.random() < tight_share else context
            src, face, largest = pool[int(rng.integers(len(pool)))]
            size = int(rng.integers(24, largest + 1))
            fh = int(face.h * size / face.w)
            x = int(rng.integers(size, 1280 - 2 * size))
            y = int(rng.integers(fh, 720 - 2 * fh))
            cand = GtBox(x, y, size, fh)
            # Keep the faces (with their pasted margins) apart so boxes stay exact.
            if any(iou(Box(c.x - c.w, c.y - c.h, 3 * c.w, 3 * c.h), cand.box()) > 0 for c in boxes):
                continue
            flip = bool(rng.integers(2))
            angle = float(rng.choice([0.0, 0.0, -20.0, -10.0, 10.0, 20.0]))
            boxes.append(_paste(canvas, src, face, x=x, y=y, size=size, flip=flip, angle=angle))
        name = f"composite_{i:02d}.jpg"
        cv2.imwrite(str(images_dir / name), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
        gts.append(GtImage(name, boxes))
        sizes[name] = (1280, 720)
    xml_path, json_path = out_dir / "boxes.xml", out_dir / "boxes.json"
    write_imglab(xml_path, gts)
    write_coco(json_path, gts, sizes)
    return images_dir, xml_path, json_path


# --- CLI ------------------------------------------------------------------------------------------------


def _detector_for(mode: str, name: str | None) -> FaceDetector:
    if name:
        table = available_detectors()
        if name not in table:
            raise typer.BadParameter(
                f"detector {name!r} is not available here; available: {', '.join(table)}"
            )
        return table[name]()
    return make_detector(mode)


def register(app: typer.Typer) -> None:
    @app.command("redact")
    def redact_cmd(
        images: Annotated[
            Path | None, typer.Option("--images", help="Folder with the images named in --boxes.")
        ] = None,
        boxes: Annotated[
            Path | None, typer.Option("--boxes", help="imglab XML or COCO JSON ground truth.")
        ] = None,
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Write the figures as one JSON object.")
        ] = None,
        min_size: Annotated[
            int, typer.Option("--min-size", help="Faces smaller than this (px) don't count.")
        ] = 24,
        mode: Annotated[str, typer.Option("--mode", help="Detector preset: fast or tiled.")] = "fast",
        detector: Annotated[
            str | None, typer.Option("--detector", help="One detector by name: cnn, cnn-tiled, lbp, haar.")
        ] = None,
        make_fixture_dir: Annotated[
            Path | None,
            typer.Option("--make-fixture", help="Write the real + composite face set here, bench it."),
        ] = None,
        tight_share: Annotated[
            float, typer.Option("--tight-share", help="With --make-fixture: share of tight LFW face crops.")
        ] = 0.3,
    ) -> None:
        """Face recall/precision (IoU >= 0.3) and time per frame of the redaction face detector."""

        console = Console()
        try:
            if make_fixture_dir is not None:

                grocery = get_settings().grocery_dir
                images, xml_path, _ = make_fixture(
                    make_fixture_dir, grocery_dir=grocery, tight_share=tight_share
                )
                boxes = boxes or xml_path
                console.print(f"fixture written to {make_fixture_dir}")
            if images is None or boxes is None:
                raise typer.BadParameter("give --images and --boxes (or --make-fixture DIR)")
            if not images.is_dir():
                raise GroundTruthError(f"{images}: not a folder")
            if mode not in MODES:
                raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}")
            gt = load_ground_truth(boxes)
            det = _detector_for(mode, detector)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("detecting faces", total=len(gt))
                result = run_bench(
                    images, gt, det, min_size=min_size, progress=lambda: progress.advance(task)
                )
        except (GroundTruthError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=2) from None
        figures = result.figures()
        table = Table(title=f"bench redact ({len(gt)} images, faces >= {min_size} px)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in figures.items():
            table.add_row(key, str(value))
        console.print(table)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(figures, indent=2) + "\n")
