"""Does `Eval_knn` give the same number as the CIFAR-10 benchmark's own k-NN report for a backbone the
benchmark trained? Same held-out split (rebuilt from the same arguments), same protocol (k=200, T=0.1).

    python benchmarks/cifar10.py --method byol --steps 200 --save-backbone runs/byol200.safetensors --out runs/byol200.jsonl
    python benchmarks/check_eval_knn.py runs/byol200.safetensors --report runs/byol200.jsonl

Prints one JSON line (benchmark's knn_top1, Eval_knn's accuracy, difference in test images) and exits 1
when they differ by more than `--tolerance` images.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_CACHE, DEFAULT_TARBALL, bank_subset, benchmark_datasets  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="backbone saved by `cifar10.py --save-backbone`")
    p.add_argument("--report", required=True, help="the JSON lines `cifar10.py --out` wrote (its 'autossl' line is used)")
    p.add_argument("--train-dir"), p.add_argument("--test-dir")
    p.add_argument("--tarball", default=str(DEFAULT_TARBALL)), p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--holdout", type=int, default=5000), p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knn-bank-size", type=int, default=0)
    p.add_argument("--eval-precision", default="bf16-mixed", choices=["32", "bf16-mixed"])
    p.add_argument("--tolerance", type=int, default=0, help="test images allowed to differ (bf16 rounding)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from autossl.evaluate import Eval_knn

    lines = [json.loads(x) for x in Path(args.report).read_text().splitlines() if x.strip()]
    reported = [x for x in lines if x.get("impl") == "autossl"][-1]
    train_ds, test_ds = benchmark_datasets(args)
    bank = bank_subset(train_ds, args.knn_bank_size, args.seed)
    result = Eval_knn(model=args.weights, dataset={"train": bank, "test": test_ds}, metric="accuracy",
                      preset="cifar10", image_size=32, batch_size=512,  # the benchmark's batches
                      bf16=args.eval_precision == "bf16-mixed")
    diff = round(abs(result["accuracy"] - reported["knn_top1"]) * len(test_ds))
    print(json.dumps({"weights": args.weights, "method": reported["method"], "steps": reported["steps"],
                      "benchmark_knn_top1": reported["knn_top1"], "eval_knn_accuracy": round(result["accuracy"], 4),
                      "differing_test_images": diff, "test_images": len(test_ds)}), flush=True)
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
