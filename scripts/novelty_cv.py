"""How the novelty score was chosen: cross-validation within Grocery ``train`` only (``val`` is never read).

Each repetition holds 10 classes out (a seeded draw), splits the remaining train photos in five folds that keep
near-duplicate bursts whole (``burst_groups``), trains the head the server trains on four folds plus the iconic
images, and scores the fifth fold (known), the held-out classes' photos (unknown) and the photos under
``--outliers``. For each candidate score it prints the AUROC known-vs-unknown and the share of unknown and
outlier photos that pass a threshold flagging 5% of the known ones.

    LOOKLOOP_MODEL_DIR=... python scripts/novelty_cv.py --outliers DIR [--repeats 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from lookloop import get_settings
from lookloop.catalog import GroceryDataset
from lookloop.loop.learner import softmax, train_identify_head
from lookloop.loop.openset import burst_groups
from lookloop.loop.simulation import outlier_images
from lookloop.models.embcache import EmbeddingCache, embed_paths
from lookloop.models.embedder import pretrained_embedder


def candidates(xm: np.ndarray, ym: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    head = train_identify_head(xm, [str(v) for v in ym])
    z = head.logits(q)
    p = np.sort(softmax(z), axis=1)
    sims = q @ xm.T
    best = -np.sort(-sims, axis=1)
    top = np.array(head.classes)[z.argmax(axis=1)]
    protos = {c: xm[ym == c].mean(axis=0) for c in head.classes}
    proto_cos = np.array([q[i] @ protos[t] / np.linalg.norm(protos[t]) for i, t in enumerate(top)])
    return {"nearest (1 - cos)": 1 - best[:, 0], "5th nearest": 1 - best[:, 4], "top-class prototype": 1 - proto_cos,
            "energy": -logsumexp(z, axis=1), "negative max-logit": -z.max(axis=1), "1 - max softmax": 1 - p[:, -1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outliers", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--similarity", type=float, default=0.9, help="burst rule: cosine that chains photos")
    args = parser.parse_args()
    settings = get_settings()
    ds = GroceryDataset(settings.grocery_dir)
    train, iconic = ds.split("train"), ds.iconic()
    embedder = pretrained_embedder(settings.model_cache_dir, settings.embedder)
    cache = EmbeddingCache(settings.model_cache_dir, embedder.version, embedder.dim)
    x = embed_paths(cache, embedder, [i.path for i in train])
    xs = embed_paths(cache, embedder, [i.path for i in iconic])
    xo = embed_paths(cache, embedder, outlier_images(args.outliers))
    y, ys = np.array([i.label for i in train]), np.array([i.label for i in iconic])
    bursts = burst_groups([str(i.path) for i in train], x, similarity=args.similarity)
    results: dict[str, list[tuple[float, float, float]]] = {}
    for rep in range(args.repeats):
        rng = np.random.default_rng(100 + rep)
        held = set(rng.choice(sorted(set(y)), 10, replace=False).tolist())
        known = np.array([c not in held for c in y])
        ids = np.unique(bursts[known])
        fold = dict(zip(ids.tolist(), (rng.permutation(ids.size) % 5).tolist(), strict=True))
        test = known & np.array([fold.get(int(b), -1) == 0 for b in bursts])
        seed_known = np.array([c not in held for c in ys])
        xm = np.vstack([xs[seed_known], x[known & ~test]])
        ym = np.concatenate([ys[seed_known], y[known & ~test]])
        nk, nu = int(test.sum()), int((~known).sum())
        scores = candidates(xm, ym, np.vstack([x[test], x[~known], xo]))
        # Rank-averaged pairs, ranks taken against the known fold (the same optimism for every pair).
        ranks = {n: np.searchsorted(np.sort(v[:nk]), v, side="right") / nk for n, v in scores.items()}
        scores["mean rank(nearest, max-logit)"] = (ranks["nearest (1 - cos)"] + ranks["negative max-logit"]) / 2
        scores["mean rank(nearest, energy)"] = (ranks["nearest (1 - cos)"] + ranks["energy"]) / 2
        for name, s in scores.items():
            k, u, o = s[:nk], s[nk : nk + nu], s[nk + nu :]
            threshold = np.quantile(k, 0.95)
            auroc = roc_auc_score(np.r_[np.zeros(nk), np.ones(nu)], np.r_[k, u])
            results.setdefault(name, []).append((auroc, float((u <= threshold).mean()), float((o <= threshold).mean())))
    print(f"{'score':30s} AUROC known/unknown   unknown passing   outliers passing  (5% of known flagged)")
    for name, rows in results.items():
        a = np.array(rows)
        print(f"{name:30s} {a[:, 0].mean():.3f} ± {a[:, 0].std(ddof=1):.3f}       {a[:, 1].mean():.3f}             "
              f"{a[:, 2].mean():.3f}")


if __name__ == "__main__":
    main()
