"""The memory planner against measured peak RSS on CPU (theory §12.7): random SD3 transformers of three widths, two
real updates of each method in one fresh process, beside ``python -m flowlite plan``'s count for the same workload.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/plan_cpu.py [--methods adjoint-matching draft] [--side 32]
"""

from __future__ import annotations

import argparse

from flowlite.jobs.plan_check import SIZES, measure, predict, sd3_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["adjoint-matching", "draft"])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "mid"], choices=list(SIZES))
    parser.add_argument("--side", type=int, default=32, help="latent side (tokens: (side/2)^2)")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    configs = [sd3_config(size, args.side) for size in args.sizes]
    measured = iter(measure(configs, args.methods, args.side, batch_size=args.batch_size))
    print("| size | width x blocks | method | predicted MiB | measured MiB | error |")
    print("|---|---|---|---|---|---|")
    for size, config in zip(args.sizes, configs):
        width = config["num_attention_heads"] * config["attention_head_dim"]
        for method in args.methods:
            peak = next(measured)
            predicted = predict(config, method, args.side, batch_size=args.batch_size)["total"]
            print(f"| {size} | {width} x {config['num_layers']} | {method} | {predicted / 2**20:.1f} | "
                  f"{peak / 2**20:.1f} | {(predicted - peak) / peak:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
