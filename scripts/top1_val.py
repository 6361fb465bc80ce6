"""Top-1 on Grocery ``val`` of the identify model that start-up serves: 81 iconic images + every ``train`` label.

A fresh system in a temporary folder imports the demo catalogue and the train labels, builds the identify model
as the server does at start-up (one head trainer, one embedding cache), then answers the 296 val photos.
``lookloop bench loop --eval-split val.txt`` without ``--finetune`` gives the same ``final_accuracy``: its last
round trains the same head on the same labels.

    LOOKLOOP_DATA=/path/to/shared/data python scripts/top1_val.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lookloop import Lookloop, Settings, get_settings
from lookloop.catalog import GroceryDataset
from lookloop.models.embcache import embed_paths


def main() -> None:
    base = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(var_dir=Path(tmp), data_dir=base.data_dir, model_dir=base.model_cache_dir)
        system = Lookloop(settings)
        system.migrate()
        system.import_grocery(settings.grocery_dir)
        model = system.build_identify()
        val = GroceryDataset(settings.grocery_dir).split("val")
        x = embed_paths(system.embedding_cache, system.embedder, [v.path for v in val])
        preds = model.predict(x)
        top1 = float(np.mean([p.top[0] == v.label for p, v in zip(preds, val, strict=True)]))
        print(f"top1_val {top1:.4f} n {len(val)} examples {len(model.memory)} model {system.model_version}")
        system.db.dispose()


if __name__ == "__main__":
    main()
