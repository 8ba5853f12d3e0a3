"""Trains the speaker-role model shipped as worker/roles_model.json.

    python -m ops.train_roles [--train train.csv] [--out worker/roles_model.json]

A logistic regression over what a turn says (lower-cased words, word bigrams and a few shape
tokens: a question mark, a number, a short turn), fitted on the `[doctor]` / `[patient]` turns of
ACI-Bench's train split only (`[patient_guest]` and unlabelled lines are left out), each turn and,
for a turn of several sentences, each of its sentences as well; valid is kept for
`scribe-eval --roles`. Positive means clinician. The fit is deterministic: binary features
kept when seen in at least MIN_COUNT train turns, full-batch Adam from zero weights for a fixed
number of steps with L2, weights rounded to 4 decimals and those under PRUNE_BELOW dropped, keys
sorted. Inference (worker/roles.py) is plain Python over the JSON, so every transcriber can use
it.

Data: ACI-Bench (Yim et al., Scientific Data 2023), CC BY 4.0; the JSON holds learned weights of
word features, not the dialogues.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np

from worker.roles import MODEL_PATH, features

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN: Final = REPO.parent / "shared" / "data" / "aci-bench" / "train.csv"
MIN_COUNT: Final = 2
STEPS: Final = 600
LEARNING_RATE: Final = 0.05
L2: Final = 2e-3
PRUNE_BELOW: Final = 0.02
LABELS: Final = {"doctor": 1.0, "patient": 0.0}
SENTENCE_END_RE: Final = re.compile(r"(?<=\s[.?!])\s+")


def labelled_turns(path: Path) -> list[tuple[str, str]]:
    """(tag, text) of every `[tag] text` line of every dialogue in an ACI-Bench CSV."""
    out: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for line in row["dialogue"].splitlines():
                line = line.strip()
                if not line.startswith("["):
                    continue
                tag, _, text = line[1:].partition("]")
                if text.strip():
                    out.append((tag.strip(), text.strip()))
    return out


def sentences(text: str) -> list[str]:
    """text cut after every sentence end; ACI-Bench writes " . " / " ? " with spaces, so
    "dr. baker" stays whole. Pieces without a letter or digit are dropped."""
    return [p for p in SENTENCE_END_RE.split(text) if any(ch.isalnum() for ch in p)]


def examples_of(turns: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each turn, and each sentence of a turn of several: a transcriber that gives no speakers
    may cut a turn anywhere, and short pieces are where the whole-turn model was weakest."""
    out: list[tuple[str, str]] = []
    for tag, text in turns:
        pieces = sentences(text)
        out.append((tag, text))
        if len(pieces) > 1:
            out += [(tag, piece) for piece in pieces]
    return out


def fit(turns: Iterable[tuple[str, str]]) -> dict[str, object]:
    examples = [(features(text), LABELS[tag]) for tag, text in examples_of(turns) if tag in LABELS]
    counts: Counter[str] = Counter()
    for feats, _ in examples:
        counts.update(set(feats))
    vocab = sorted(f for f, n in counts.items() if n >= MIN_COUNT)
    index = {f: i for i, f in enumerate(vocab)}
    rows: list[int] = []
    cols: list[int] = []
    for row, (feats, _) in enumerate(examples):
        for col in sorted({index[f] for f in feats if f in index}):
            rows.append(row)
            cols.append(col)
    r, c = np.asarray(rows), np.asarray(cols)
    y = np.asarray([label for _, label in examples])
    n, d = len(examples), len(vocab)
    w, b = np.zeros(d), 0.0
    m, v, mb, vb = np.zeros(d), np.zeros(d), 0.0, 0.0
    for step in range(1, STEPS + 1):
        logits = np.bincount(r, weights=w[c], minlength=n) + b
        error = 1.0 / (1.0 + np.exp(-logits)) - y
        grad = np.bincount(c, weights=error[r], minlength=d) / n + L2 * w
        grad_b = float(error.mean())
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        mb = 0.9 * mb + 0.1 * grad_b
        vb = 0.999 * vb + 0.001 * grad_b * grad_b
        scale = LEARNING_RATE * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        w -= scale * m / (np.sqrt(v) + 1e-8)
        b -= scale * mb / (np.sqrt(vb) + 1e-8)
    weights = {
        f: round(float(x), 4) for f, x in zip(vocab, w, strict=True) if abs(x) >= PRUNE_BELOW
    }
    return {
        "about": "speaker-role logistic regression, positive = clinician; "
        "trained by ops/train_roles.py on ACI-Bench train (CC BY 4.0)",
        "bias": round(b, 4),
        "weights": dict(sorted(weights.items())),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_roles", description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    args = parser.parse_args(argv)
    if not args.train.is_file():
        print(f"train_roles: no such file: {args.train}", file=sys.stderr)
        return 2
    model = fit(labelled_turns(args.train))
    text = json.dumps(model, indent=0, sort_keys=True, separators=(",", ":")) + "\n"
    args.out.write_text(text, encoding="utf-8")
    weights = model["weights"]
    assert isinstance(weights, dict)
    print(f"wrote {args.out} ({len(weights)} weights, {len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
