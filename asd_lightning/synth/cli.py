"""``asd-synth``: write the synthetic DCASE-style dataset from the command line.

Examples::

    asd-synth --out data/synth                       # small demo dataset (2022 layout)
    asd-synth --out data/easy --difficulty easy      # the first, easy sound model (fast tests)
    asd-synth --year 2021 --out data/synth21 --machine-types fan pump --seed 3
    asd-synth --out data/full --full-size            # DCASE sizes: 10 s, 990+10, 50+50
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from .config import MACHINE_TYPES_BY_YEAR, SAMPLE_RATE, SYNTH_YEARS, SynthConfig
from .difficulty import DIFFICULTIES
from .layout import plan_clips
from .writer import summarize, write_synthetic_dataset

# CLI option -> SynthConfig field
_FIELDS = {
    "year": "year", "machine_types": "machine_types", "sections": "dev_sections",
    "eval_sections": "eval_sections", "train_clips": "source_train_clips",
    "target_train_clips": "target_train_clips", "test_clips": "test_clips",
    "seconds": "clip_seconds", "seed": "seed", "anomaly_strength": "anomaly_strength",
    "domain_shift": "domain_shift", "background_level": "background_level",
    "difficulty": "difficulty",
    "supplemental_clips": "supplemental_clips",
}


def build_parser() -> argparse.ArgumentParser:
    d = SynthConfig()
    p = argparse.ArgumentParser(
        prog="asd-synth",
        description="Write a synthetic machine-sound dataset in the exact DCASE Task 2 layout "
                    "(development + evaluation data and ground truth).")
    p.add_argument("--out", required=True, help="output directory (dataset root)")
    p.add_argument("--year", type=int, choices=SYNTH_YEARS,
                   help=f"DCASE year whose layout is written (default {d.year}): 2023+ use the 2022 names, "
                        "2024+ hide some machine types' attributes, 2025 adds supplemental/ clips, "
                        "2026 writes stereo near/far clips")
    p.add_argument("--machine-types", nargs="+", metavar="TYPE",
                   help=f"default {' '.join(d.machine_types)} (2026: their 2026 names); " + "; ".join(
                       f"{y}: {' '.join(MACHINE_TYPES_BY_YEAR[y])}" for y in SYNTH_YEARS))
    p.add_argument("--supplemental-clips", type=int, metavar="N",
                   help=f"2025: clean machine and noise-only clips per machine type (default {d.supplemental_clips})")
    p.add_argument("--sections", nargs="+", type=int, metavar="N",
                   help=f"development sections (default {' '.join(map(str, d.dev_sections))}; 2023 on: 0)")
    p.add_argument("--eval-sections", nargs="*", type=int, metavar="N",
                   help="evaluation sections, none for no evaluation data "
                        f"(default {' '.join(map(str, d.eval_sections))}; 2023 on: 1)")
    p.add_argument("--train-clips", type=int, metavar="N",
                   help=f"source-domain training clips per section (default {d.source_train_clips})")
    p.add_argument("--target-train-clips", type=int, metavar="N",
                   help=f"target-domain training clips per section (default {d.target_train_clips})")
    p.add_argument("--test-clips", type=int, metavar="N",
                   help=f"test clips per section, domain and label (default {d.test_clips})")
    p.add_argument("--seconds", type=float, help=f"clip length (default {d.clip_seconds:g})")
    p.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    p.add_argument("--anomaly-strength", type=float,
                   help=f"scales every anomaly kind (default {d.anomaly_strength:g})")
    p.add_argument("--domain-shift", type=float,
                   help=f"target-domain shift strength (default {d.domain_shift:g})")
    p.add_argument("--background-level", type=float,
                   help=f"factory noise level relative to the machine (default {d.background_level:g})")
    p.add_argument("--difficulty", choices=list(DIFFICULTIES),
                   help="sound model: realistic (normal sounds vary within a section, the target "
                        "domain is recorded elsewhere, anomalies within the normal spread of band "
                        "statistics) or easy (the first set, for fast tests); default "
                        f"{d.difficulty}; see docs/synthetic.md")
    p.add_argument("--full-size", action="store_true",
                   help="DCASE 2022 sizes (10 s clips, 990+10 training, 50+50 test per domain); "
                        "explicit size options still win")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty directory that is not a synthetic dataset "
                        "(replaces dev_data, eval_data, ground_truth there)")
    p.add_argument("--workers", type=int, default=None, help="synthesis threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {field: getattr(args, opt) for opt, field in _FIELDS.items()
                 if getattr(args, opt) is not None}
    try:
        config = (SynthConfig.full_size if args.full_size else SynthConfig)(**overrides)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    start = time.perf_counter()
    try:
        root = write_synthetic_dataset(args.out, config, overwrite=args.overwrite,
                                       workers=args.workers)
    except (FileExistsError, NotADirectoryError) as err:
        print(f"asd-synth: error: {err}", file=sys.stderr)
        return 1
    counts = summarize(plan_clips(config))
    print(f"Wrote a synthetic DCASE {config.year}-layout dataset to {root}")
    print(f"{len(config.machine_types)} machine types ({', '.join(config.machine_types)}), "
          f"{len(config.dev_sections)} dev + {len(config.eval_sections)} eval sections: "
          f"{counts['dev_train']} dev train, {counts['dev_test']} dev test, "
          f"{counts['eval_train']} eval train, {counts['eval_test']} eval test clips "
          f"({counts['total']} WAV, {config.clip_seconds:g} s, {SAMPLE_RATE // 1000} kHz, "
          f"{config.difficulty}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
