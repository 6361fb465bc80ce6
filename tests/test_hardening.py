"""Input hygiene and bounded resources: each test here failed before its fix."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookloop.domain import clean_text
from lookloop.errors import BadInput
from lookloop.imaging import MAX_FRAME_SIDE, decode_image
from lookloop.metrics import parse_when
from lookloop.server.app import create_app
from lookloop.system import Lookloop


def test_a_huge_time_span_is_a_clear_error_not_an_overflow() -> None:
    with pytest.raises(BadInput, match="before the year 1"):
        parse_when("99999999d")


def test_metrics_with_a_huge_span_answer_422(small_system: Lookloop) -> None:
    small_system.humans.accounts.add_account("op", "operator", "pw-12345678")
    with TestClient(create_app(system=small_system, warm=False)) as c:
        token = c.post("/v1/auth/login", json={"username": "op", "password": "pw-12345678"}).json()["token"]
        r = c.get("/v1/operators/metrics", params={"since": "99999999d"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 422 and "year 1" in r.json()["detail"]


@pytest.mark.parametrize("text", ["\x00", "\x1b\x07", "\u200b\u200c\u200d", "\ufeff \u2060", "\u202e"])
def test_control_and_invisible_characters_alone_are_an_empty_question(small_system: Lookloop, text: str) -> None:
    with pytest.raises(BadInput, match="empty"):
        small_system.ask(text, None, skill="human")


def test_control_characters_are_never_stored(small_system: Lookloop) -> None:
    record = small_system.ask("what\x00 is\u200b this\x1b?", None, skill="human")
    assert record.question == "what is this?"
    assert clean_text("读\u200d一下\n第二行") == "读一下\n第二行"  # real text, CJK and newlines, stays


def test_a_huge_frame_is_decoded_small() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3000, 1500), (200, 30, 30)).save(buf, format="PNG")
    frame = decode_image(buf.getvalue(), max_bytes=1 << 30, max_pixels=1 << 30)
    assert max(frame.width, frame.height) == MAX_FRAME_SIDE and frame.width == 2 * frame.height
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(buf, format="JPEG")
    frame = decode_image(buf.getvalue(), max_bytes=1 << 30, max_pixels=1 << 30)
    assert max(frame.width, frame.height) <= MAX_FRAME_SIDE and frame.rgb[0, 0, 1] > 150


def test_decoding_a_6000px_png_stays_within_its_memory_budget(tmp_path: Path) -> None:
    """A 6000x6000 PNG of ~100 KB once cost ~0.5 GB to decode; one full RGB buffer is 108 MB."""
    path = tmp_path / "big.png"
    Image.new("RGB", (6000, 6000), (120, 120, 120)).save(path, format="PNG")
    assert path.stat().st_size < 1_000_000
    script = textwrap.dedent(f"""
        import resource, sys
        from lookloop.imaging import decode_image
        data = open({str(path)!r}, "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        frame = decode_image(data, max_bytes=1 << 30, max_pixels=40_000_000)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024, frame.width, frame.height)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    grown_mb, width, height = (int(v) for v in out.stdout.split())
    assert (width, height) == (MAX_FRAME_SIDE, MAX_FRAME_SIDE)
    assert grown_mb < 200, f"decoding grew the process by {grown_mb} MB"


def test_dictated_notes_stay_with_the_wearer(small_system: Lookloop) -> None:
    device, _ = small_system.humans.accounts.add_device("nora", "glasses")
    started = small_system.ask("take notes", None, device_id=device.id)
    assert started.answer.skill == "notes" and started.answer.result.get("started")
    said = ["The budget for the garden is twelve thousand crowns.", "Anna orders the seeds on Monday."]
    for sentence in said:
        record = small_system.ask(sentence, None, device_id=device.id)
        assert record.answer.skill == "notes" and record.answer.decision.value == "answer", record.answer
        assert small_system.humans.queue.for_ask(record.id) is None  # no stranger reads it
    summary = small_system.ask("summarise my notes", None, device_id=device.id)
    assert "Nothing was noted" not in summary.answer.text
    assert "budget" in summary.answer.text.lower() or "seeds" in summary.answer.text.lower()
    # Once the session is closed, an out-of-scope question goes to a helper again, and says so.
    small_system.ask("stop taking notes and summarise", None, device_id=device.id)
    later = small_system.ask("tell me a joke about gardens", None, device_id=device.id)
    assert later.answer.decision.value == "escalate" and "helper" in later.answer.text
