"""Helpers shared by the privacy tests: a small system, images with a face and with personal text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from conftest import build_small_system, make_settings, small_val

from lookloop.catalog import GroceryDataset


def system_for(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset, **overrides: Any) -> Any:
    settings = make_settings(tmp_path, data_dir, model_dir, **overrides)
    return build_small_system(settings, grocery, per_class=6)


def product_photo(grocery: GroceryDataset, label: str = "Banana", i: int = 0) -> bytes:
    return [x for x in small_val(grocery) if x.label == label][i].path.read_bytes()


def face_photo() -> bytes:
    import skimage.data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(buf)


def receipt_photo() -> bytes:
    img = np.full((360, 900, 3), 255, np.uint8)
    cv2.putText(img, "THANK YOU FOR SHOPPING", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (0, 0, 0), 3)
    cv2.putText(img, "jane.doe@example.com", (40, 180), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
    cv2.putText(img, "4111 1111 1111 1111", (40, 280), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return bytes(buf)


def add_device(system: Any, wearer: str) -> tuple[str, str, str]:
    """(device_id, wearer_id, token) for a new device of ``wearer``."""
    from lookloop.humans.accounts import Accounts

    info, token = Accounts(system.db).add_device(wearer)
    return info.id, info.wearer_id, token
