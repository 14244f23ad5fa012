"""``asd-fuse``: fuse the clip scores of finished runs into one scored run.

Examples::

    asd-fuse logs/train/runs/<floor> logs/train/runs/<mobilenetv2> --out logs/fusion/floor+mnv2
    asd-fuse <run> <run> <run> --weights 2 1 1 --out fused/

Each run folder (or its ``submission/`` folder) must hold ``clip_scores.csv``; the runs must have
scored the same test clips. The output folder gets what any run's ``submission/`` holds
(submission CSVs, decision thresholds, clip scores, the official table when the test clips are
labelled) plus ``fusion.json`` naming the runs and weights, which makes it a fused result:
``asd-fuse`` reads it as one (a run folder is always read from its ``submission/``) and never
writes into a run's folder. Runs must have scored the same data (``data.json``: root and test
clips' fingerprint); a run given twice is fused twice, with a warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from asd_lightning.utils.errors import EXIT_USER_ERROR


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-fuse", description="Fuse finished runs' clip scores: per-section "
                                "z-scores on each run's fit-clip scores, weighted mean.")
    p.add_argument("runs", nargs="+", help="run folders (or their submission/ folders) holding clip_scores.csv")
    p.add_argument("--weights", nargs="+", type=float, help="one positive weight per run (default: equal)")
    p.add_argument("--out", required=True, help="folder for the fused submission files and table")
    p.add_argument("--decision-quantile", type=float, default=0.9,
                   help="gamma quantile of the fused fit-clip scores used as the decision threshold")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 0 on success, 2 on any error (one line on stderr)."""
    args = _parser().parse_args(argv)
    try:
        from asd_lightning.scoring.fusion import (FUSION_RECORD, check_output_folder, check_same_data,
                                                  clip_scores_file, fuse, read_clip_scores, read_data_record)

        check_output_folder(args.out)
        tables = [read_clip_scores(run) for run in args.runs]
        sources = [str(clip_scores_file(r).resolve()) for r in args.runs]
        for i, source in enumerate(sources):
            if source in sources[:i]:
                print(f"asd-fuse: warning: {args.runs[i]} is the same run as {args.runs[sources.index(source)]} "
                      f"({source}); it is fused twice", file=sys.stderr)
        records = [read_data_record(r) for r in args.runs]
        for warning in check_same_data(args.runs, records):
            print(f"asd-fuse: warning: {warning}", file=sys.stderr)
        run = fuse(tables, args.weights, names=args.runs, decision_quantile=args.decision_quantile)
        run.data = next((r for r in records if r is not None), None)
        out = run.save(args.out)
        weights = args.weights or [1.0] * len(args.runs)
        (out / FUSION_RECORD).write_text(json.dumps({"runs": sources, "weights": weights,
                                                     "decision_quantile": args.decision_quantile}, indent=2) + "\n")
        if run.report is not None:
            print(run.report.format_table())
        print(f"fused {len(tables)} runs into {Path(args.out)}")
    except (ValueError, OSError) as error:
        print(f"asd-fuse: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
