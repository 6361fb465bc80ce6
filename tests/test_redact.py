"""Redaction: face detectors (one conformance suite), personal-text finding, masking, ground truth, bench."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lookloop.bench.redact import (
    GroundTruthError,
    GtBox,
    load_ground_truth,
    make_fixture,
    parse_coco,
    parse_imglab,
    register,
    score_image,
)
from lookloop.models.faces import (
    Box,
    FaceDetector,
    available_detectors,
    iou,
    make_detector,
    nms,
)
from lookloop.privacy.pii import ean_ok, find_pii, iban_ok, luhn_ok
from lookloop.privacy.redact import Redactor

FIXTURES = Path(__file__).parent / "fixtures" / "privacy"
ASTRONAUT_FACE = Box(176, 60, 94, 118)


def _astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))


DETECTORS: dict[str, Callable[[], FaceDetector]] = available_detectors()


# --- conformance: every detector through the same checks ------------------------------------------------


@pytest.fixture(scope="module", params=sorted(DETECTORS))
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return DETECTORS[request.param]()


def test_some_detector_is_available() -> None:
    assert "cnn" in DETECTORS


def test_detector_finds_a_real_face(detector: FaceDetector) -> None:
    boxes = detector.detect(_astronaut())
    assert isinstance(detector, FaceDetector)
    assert any(iou(b, ASTRONAUT_FACE) >= 0.3 for b in boxes), boxes


def test_detector_boxes_are_well_formed(detector: FaceDetector) -> None:
    image = _astronaut()
    for b in detector.detect(image):
        assert isinstance(b.x, int) and isinstance(b.w, int)
        assert 0 <= b.x and 0 <= b.y and b.w > 0 and b.h > 0
        assert b.x + b.w <= image.shape[1] and b.y + b.h <= image.shape[0]
        assert 0.0 <= b.score <= 1.0


def test_detector_finds_nothing_on_a_plain_frame(detector: FaceDetector) -> None:
    assert detector.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_detector_is_deterministic_and_accepts_gray(detector: FaceDetector) -> None:
    image = _astronaut()
    assert detector.detect(image) == detector.detect(image.copy())
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert any(iou(b, ASTRONAUT_FACE) >= 0.3 for b in detector.detect(gray))


def test_detector_rejects_bad_arrays(detector: FaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 5), np.uint8))


def test_detector_version_names_the_model(detector: FaceDetector) -> None:
    assert detector.version and "(" in detector.version


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown face detector mode"):
        make_detector("psychic")


def test_nms_merges_overlaps_and_keeps_separate_boxes() -> None:
    boxes = [Box(10, 10, 50, 50, 0.9), Box(12, 12, 50, 50, 0.8), Box(200, 200, 30, 30, 0.7)]
    kept = nms(boxes)
    assert kept == [Box(10, 10, 50, 50, 0.9), Box(200, 200, 30, 30, 0.7)]


# --- personal text --------------------------------------------------------------------------------------


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("5555555555554444")
    assert luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")
    assert not luhn_ok("41x1")


def test_iban_and_ean_checks() -> None:
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert iban_ok("SE4550000000058398257466")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert ean_ok("4006381333931")
    assert not ean_ok("4006381333932")


@pytest.mark.parametrize(
    ("text", "kind", "needle"),
    [
        ("mail anna.svensson@example.com now", "email", "anna.svensson@example.com"),
        ("CARD 4111 1111 1111 1111", "card", "4111 1111 1111 1111"),
        ("CARD4111111111111111", "card", "4111111111111111"),
        ("Visa 4111-1111-1111-1111 exp 12/27", "card", "4111-1111-1111-1111"),
        ("Tel +46 70 123 45 67", "phone", "+46 70 123 45 67"),
        ("Tel+46701234567", "phone", "+46701234567"),
        ("ring 070-123 45 67", "phone", "070-123 45 67"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "id", "GB82 WEST 1234 5698 7654 32"),
        ("pnr 811218-9876", "id", "811218-9876"),
        ("SSN 078-05-1120", "id", "078-05-1120"),
        ("Passport X12345678", "id", "X12345678"),
        ("Member no 9876543210", "id", "9876543210"),
    ],
)
def test_find_pii_kinds(text: str, kind: str, needle: str) -> None:
    found = find_pii(text)
    assert [(m.kind, m.text) for m in found] == [(kind, needle)]
    assert text[found[0].start : found[0].end] == needle


@pytest.mark.parametrize(
    "text",
    [
        "TOTAL 12.90",
        "MILK 1L 12.90",
        "2026-11-25 13:02",
        "EAN 4006381333931",
        "Org 12 items",
        "T0TAL12.90",
        "",
    ],
)
def test_find_pii_leaves_ordinary_text(text: str) -> None:
    assert find_pii(text) == []


def _with_luhn_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from("3456"), st.text("0123456789", min_size=14, max_size=14), st.sampled_from(["", " "]))
def test_any_luhn_valid_card_is_found(first: str, body: str, sep: str) -> None:
    number = _with_luhn_digit(first + body)
    printed = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    found = find_pii(f"PAID WITH {printed} THANKS")
    assert [m.kind for m in found] == ["card"]
    assert found[0].text.replace(" ", "") == number


# --- redaction on images --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def test_redact_blurs_the_face_and_keeps_the_background(redactor: Redactor) -> None:
    image = _astronaut()
    result = redactor.redact(image, faces=True, text=False)
    faces = [r for r in result.regions if r.kind == "face"]
    assert faces and all(r.detector == result.model_version.removeprefix("faces=") for r in faces)
    x, y, w, h = ASTRONAUT_FACE.as_list()
    diff = np.abs(result.image.astype(int) - image.astype(int))
    assert diff[y : y + h, x : x + w].mean() > 15
    # The face's fine detail is gone: the blurred face has little high-frequency energy left.
    lap_before = cv2.Laplacian(
        cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[y : y + h, x : x + w], cv2.CV_64F
    ).var()
    lap_after = cv2.Laplacian(
        cv2.cvtColor(result.image, cv2.COLOR_BGR2GRAY)[y : y + h, x : x + w], cv2.CV_64F
    )
    assert lap_after.var() < 0.1 * lap_before
    untouched = np.ones(image.shape[:2], bool)
    for r in result.regions:
        rx, ry, rw, rh = r.box
        untouched[ry : ry + rh, rx : rx + rw] = False
    assert untouched.mean() > 0.8
    assert diff[untouched].max() == 0
    assert "libfacedetection" in result.model_version
    assert result.jpeg()[:3] == b"\xff\xd8\xff"


def test_redact_accepts_encoded_bytes_and_rejects_junk(redactor: Redactor) -> None:
    from lookloop.errors import BadInput

    ok, buf = cv2.imencode(".png", _astronaut())
    assert ok
    result = redactor.redact(bytes(buf), text=False)
    assert any(r.kind == "face" for r in result.regions)
    with pytest.raises(BadInput):
        redactor.redact(b"not an image")
    with pytest.raises(BadInput):
        redactor.redact(b"")


def _receipt() -> tuple[np.ndarray, dict[str, int]]:
    image = np.full((420, 700, 3), 255, np.uint8)
    lines = ["COOP KONSUM", "TOTAL 12.90", "anna.svensson@example.com", "CARD 4111 1111 1111 1111"]
    rows = {}
    for i, text in enumerate(lines):
        y = 60 + i * 80
        cv2.putText(image, text, (20, y), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2, cv2.LINE_AA)
        rows[text] = y
    return image, rows


def test_redact_fills_email_and_card_but_not_the_total(redactor: Redactor) -> None:
    from lookloop.models.ocr import shared_reader

    image, rows = _receipt()
    result = redactor.redact(image, faces=False, text=True)
    kinds = sorted(r.kind for r in result.regions)
    assert kinds == ["card", "email"]
    changed = np.abs(result.image.astype(int) - image.astype(int)).sum(axis=2) > 0
    total_y = rows["TOTAL 12.90"]
    assert not changed[total_y - 40 : total_y + 15].any()
    gray = cv2.cvtColor(result.image, cv2.COLOR_BGR2GRAY)
    for secret in ("anna.svensson@example.com", "4111 1111 1111 1111"):
        line = next(k for k in rows if secret in k)
        y = rows[line]
        (prefix_w, _), _ = cv2.getTextSize(line[: line.index(secret)], cv2.FONT_HERSHEY_SIMPLEX, 1.1, 2)
        # The ink of the secret, found in the original: its whole bounding box must now be filled.
        band = image[y - 45 : y + 15, 20 + prefix_w :, 0] < 128
        ys, xs = np.nonzero(band)
        box = gray[
            y - 45 + ys.min() : y - 45 + ys.max() + 1, 20 + prefix_w + xs.min() : 20 + prefix_w + xs.max()
        ]
        assert (box < 60).mean() > 0.97, secret
    texts = " ".join(
        line.text for line in shared_reader().read(np.ascontiguousarray(result.image[:, :, ::-1]))
    )
    assert "@" not in texts and "4111" not in texts
    assert "12.90" in texts
    assert "pii-regex" in result.model_version and "faces" not in result.model_version


def test_redact_masks_only_the_span_inside_a_longer_line(redactor: Redactor) -> None:
    image = np.full((120, 900, 3), 255, np.uint8)
    line, font = "Questions? Mail help@shop.example", cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, line, (20, 70), font, 1.1, (0, 0, 0), 2)
    result = redactor.redact(image, faces=False, text=True)
    assert [r.kind for r in result.regions] == ["email"]
    x, _, w, _ = result.regions[0].box
    (prefix_w, _), _ = cv2.getTextSize("Questions?", font, 1.1, 2)
    (line_w, _), _ = cv2.getTextSize(line, font, 1.1, 2)
    # "Questions?" at the left stays readable; the address up to its end is covered.
    assert x > 20 + prefix_w and x + w >= 20 + line_w - 5


# --- ground truth and scoring ---------------------------------------------------------------------------


def test_imglab_and_coco_fixtures_agree() -> None:
    xml = parse_imglab(FIXTURES / "faces_imglab.xml")
    coco = parse_coco(FIXTURES / "faces_coco.json")
    assert [(g.file, g.boxes) for g in xml] == [(g.file, g.boxes) for g in coco]
    messi = xml[2]
    assert messi.boxes[0] == GtBox(224, 92, 32, 40) and [b.ignore for b in messi.boxes] == [False, True, True]
    assert load_ground_truth(FIXTURES / "faces_coco.json")[0].boxes == [GtBox(176, 60, 94, 118)]


def test_bad_ground_truth_files_raise_clear_errors(tmp_path: Path) -> None:
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<images><image file='a.jpg'><box top='x'/></image></images>")
    with pytest.raises(GroundTruthError, match="numeric"):
        load_ground_truth(bad_xml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": []}')
    with pytest.raises(GroundTruthError, match="COCO"):
        load_ground_truth(bad_json)
    with pytest.raises(GroundTruthError, match="no such file"):
        load_ground_truth(tmp_path / "missing.xml")


def test_score_image_ignores_small_and_ignored_faces() -> None:
    gt = [
        GtBox(0, 0, 40, 40),
        GtBox(100, 100, 10, 10),
        GtBox(200, 200, 40, 40, ignore=True),
        GtBox(300, 0, 40, 40),
    ]
    dets = [Box(2, 2, 40, 40), Box(101, 101, 10, 10), Box(201, 201, 40, 40), Box(500, 500, 30, 30)]
    s = score_image(gt, dets, min_size=24)
    assert (s.n_faces, s.found, s.false_pos) == (2, 1, 1)


# --- bench ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("faces")
    return make_fixture(out, grocery_dir=None, n_composites=1, faces_per_image=4, seed=3)


def test_fixture_writes_matching_imglab_and_coco(small_fixture: tuple[Path, Path, Path]) -> None:
    images, xml, coco = small_fixture
    a, b = load_ground_truth(xml), load_ground_truth(coco)
    assert [(g.file, g.boxes) for g in a] == [(g.file, g.boxes) for g in b]
    composite = [g for g in a if g.file.startswith("composite")]
    assert len(composite) == 1 and len(composite[0].boxes) == 4
    assert all(24 <= box.w <= 80 for box in composite[0].boxes)
    for g in a:
        assert cv2.imread(str(images / g.file)) is not None


def test_bench_writes_the_figures(small_fixture: tuple[Path, Path, Path], tmp_path: Path) -> None:
    images, xml, _ = small_fixture
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer from collapsing the group
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(
        app, ["redact", "--images", str(images), "--boxes", str(xml), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert {"face_recall", "face_precision", "n_faces", "ms_per_720p_frame", "ms_per_frame_p50"} <= set(
        figures
    )
    assert figures["n_faces"] == 7  # 3 real photos + 4 pasted faces; Messi's crowd is ignored
    assert 0.0 <= figures["face_recall"] <= 1.0 and 0.0 <= figures["face_precision"] <= 1.0
    assert "face_recall" in result.output


def test_bench_bad_input_is_one_line(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(
        app, ["redact", "--images", str(tmp_path), "--boxes", str(tmp_path / "nope.xml")]
    )
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "no such file" in output and "Traceback" not in output
