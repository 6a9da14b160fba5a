"""Export a checkpoint of ``scripts/train_verifier.py`` to ONNX, check it against torch, quantise it to int8.

Run in the training environment (torch, transformers, onnx, onnxruntime)::

    .venv-train/bin/python scripts/export_verifier.py --run verifier-run [--checkpoint best]

Steps, all recorded in ``<run>/export.json``:

1. ``torch.onnx.export`` of the checkpoint with the *eager* attention (the SDPA path traced the padding mask
   badly: logits off by up to 0.75), dynamic batch and sequence axes, one output ``logits`` of shape
   ``(batch, 1)``.
2. The fp32 ONNX model against torch on ``--check`` real validation pairs (``val_qqp.jsonl``), one at a time and
   in padded batches of 16: the largest absolute logit difference must stay under ``--tolerance``.
3. Dynamic int8 quantisation (``onnxruntime.quantization.quantize_dynamic``, int8 weights with per-channel
   scales), then int8 against
   fp32 on the validation fold, one pair per call as the runtime does: AUC, precision at a 50% hit rate, hit rate
   at 90% precision. (The int8 model quantises activations per call, so a pair scored inside a padded batch
   gets a slightly different logit: recorded as ``max_abs_logit_diff_int8_single_vs_batch16``.)
4. The logits of the int8 model for a fixed list of pairs, written to ``<run>/expected_logits.json`` (the unit
   tests compare the shipped model with them).

The int8 file is ``<run>/verifier_minilm_int8.onnx``; copy it to ``src/frugal_chains/_data/`` and update the sha256
in ``frugal_chains/cache/guard/cross_encoder.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_verifier import auc, hit_rate_at_precision, precision_at_hit_rate

#: Pairs whose int8 logits are recorded for the unit tests (hand-written, not from any dataset).
FIXED_PAIRS: list[tuple[str, str]] = [
    ("How do I reset my password?", "I forgot my password, how can I reset it?"),
    ("How do I reset my password?", "How do I change my email address?"),
    ("How do I enable 2FA?", "How do I disable 2FA?"),
    (
        "What is the maximum daily dose of paracetamol for adults?",
        "What is the maximum daily dose of paracetamol for children?",
    ),
    (
        "How do I sort a list in ascending order in Python?",
        "How do I sort a list in descending order in Python?",
    ),
    ("What is your return policy?", "How do I return an item?"),
    ("Who is the CEO of Apple?", "Who is the CEO of Google?"),
    ("Do you ship to Canada?", "How long does shipping to Canada take?"),
    ("How can I learn to play the guitar?", "What is the best way to learn guitar?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I cancel my subscription?", "How can I cancel my subscription?"),
    ("How do I cancel my subscription?", "How do I upgrade my subscription?"),
    ("Why is the sky blue?", "What makes the sky look blue?"),
    ("What is the best laptop for programming?", "What is the cheapest laptop for programming?"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("My card payment was declined, why?", "Why was my card payment declined?"),
    ("I still have not received my new card.", "When will my card arrive?"),
    ("How do I top up my account?", "My top up failed, what should I do?"),
    ("Is it safe to eat raw eggs?", "Can you eat raw eggs safely?"),
    ("How many calories are in a banana?", "How many calories are in an apple?"),
    ("", "What is your return policy?"),
    ("a " * 200, "b " * 200),
]


def load_pairs(path: Path) -> list[tuple[str, str, int]]:
    out = []
    with path.open() as f:
        for line in f:
            r = json.loads(line)
            out.append((r["text_a"], r["text_b"], int(r["label"])))
    return out


def ort_logits(session: Any, tok: Any, pairs: list[tuple[str, str]], batch: int) -> list[float]:
    import numpy as np

    out: list[float] = []
    for s in range(0, len(pairs), batch):
        chunk = pairs[s : s + batch]
        enc = tok(
            [a for a, _ in chunk],
            [b for _, b in chunk],
            truncation=True,
            max_length=64,
            padding=True,
            return_tensors="np",
        )
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        out.extend(float(v) for v in session.run(["logits"], feeds)[0][:, 0])
    return out


def torch_logits(model: Any, tok: Any, pairs: list[tuple[str, str]], batch: int) -> list[float]:
    import torch

    out: list[float] = []
    with torch.inference_mode():
        for s in range(0, len(pairs), batch):
            chunk = pairs[s : s + batch]
            enc = tok(
                [a for a, _ in chunk],
                [b for _, b in chunk],
                truncation=True,
                max_length=64,
                padding=True,
                return_tensors="pt",
            )
            out.extend(float(v) for v in model(**enc).logits[:, 0])
    return out


def figures(scores: list[float], labels: list[int]) -> dict[str, float]:
    return {
        "auc": round(auc(scores, labels), 4),
        "precision_at_hit_0.50": round(precision_at_hit_rate(scores, labels, 0.5), 4),
        "hit_rate_at_precision_0.90": round(hit_rate_at_precision(scores, labels, 0.9), 4),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--check", type=int, default=400, help="validation pairs compared torch vs ONNX")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    ckpt = args.run / args.checkpoint
    tok = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        ckpt, local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    fp32 = args.run / "verifier_minilm_fp32.onnx"
    int8 = args.run / "verifier_minilm_int8.onnx"
    enc = tok(
        ["How do I reset my password?", "hi"],
        ["I forgot my password", "hello there you"],
        padding=True,
        return_tensors="pt",
    )
    t0 = time.monotonic()
    torch.onnx.export(
        model,
        (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )
    export_s = time.monotonic() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    s32 = ort.InferenceSession(str(fp32), sess_options=opts, providers=["CPUExecutionProvider"])

    val = load_pairs(args.run / "val_qqp.jsonl")
    check = [(a, b) for a, b, _ in val[: args.check]]
    ref1 = torch_logits(model, tok, check, 1)
    ref16 = torch_logits(model, tok, check, 16)
    o1 = ort_logits(s32, tok, check, 1)
    o16 = ort_logits(s32, tok, check, 16)
    diff_single = max(abs(x - y) for x, y in zip(ref1, o1, strict=True))
    diff_batch = max(abs(x - y) for x, y in zip(ref16, o16, strict=True))
    diff_torch_pad = max(abs(x - y) for x, y in zip(ref1, ref16, strict=True))
    print(
        f"torch vs onnx fp32: single {diff_single:.2e}, batched {diff_batch:.2e} "
        f"(torch single vs batched {diff_torch_pad:.2e})",
        flush=True,
    )
    if max(diff_single, diff_batch) > args.tolerance:
        raise SystemExit(f"the fp32 export is off by more than {args.tolerance}: not quantising")

    # per-channel weight scales: on the validation fold, per-tensor scales lost 0.005 AUC and 0.03 precision at a
    # 50% hit rate against fp32; per-channel lost 0.001 AUC (quantising only MatMul kept more, at 59 MB)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    s8 = ort.InferenceSession(str(int8), sess_options=opts, providers=["CPUExecutionProvider"])

    i8_1 = ort_logits(s8, tok, check, 1)
    i8_16 = ort_logits(s8, tok, check, 16)
    record: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "export_seconds": round(export_s, 1),
        "check_pairs": len(check),
        "max_abs_logit_diff_torch_vs_onnx_fp32": {"single": diff_single, "batch16": diff_batch},
        # dynamic int8 quantises activations per call: a padded batch changes a pair's score a little
        "max_abs_logit_diff_int8_single_vs_batch16": max(
            abs(x - y) for x, y in zip(i8_1, i8_16, strict=True)
        ),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": int8.stat().st_size,
        "int8_sha256": sha256(int8),
    }
    for name in ("val_qqp", "val_banking"):
        rows = load_pairs(args.run / f"{name}.jsonl")
        pairs = [(a, b) for a, b, _ in rows]
        labels = [lbl for *_, lbl in rows]
        f32 = ort_logits(s32, tok, pairs, 1)  # one pair per call, as CrossEncoderVerifier runs them
        i8 = ort_logits(s8, tok, pairs, 1)
        record[name] = {
            "n": len(rows),
            "fp32": figures(f32, labels),
            "int8": figures(i8, labels),
            "max_abs_logit_diff_int8_vs_fp32": max(abs(x - y) for x, y in zip(f32, i8, strict=True)),
        }
        print(name, json.dumps(record[name]), flush=True)
    expected = [
        {"query": a, "cached": b, "logit": v}
        for (a, b), v in zip(FIXED_PAIRS, ort_logits(s8, tok, FIXED_PAIRS, 1), strict=True)
    ]
    (args.run / "expected_logits.json").write_text(json.dumps(expected, indent=1) + "\n")
    (args.run / "export.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if not k.startswith("val_")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
