"""``asd-report``: the results table of finished runs, rebuilt from their folders.

Examples::

    asd-report logs/train/multiruns/sweep1                   # a multirun (or search) folder
    asd-report logs/train/runs/fan-* logs/train/runs/valve-* --out reports/ae
    asd-report logs/train/multiruns/sweep1 --wandb-project asd-lightning

A multirun folder lists its own jobs (``multirun.yaml``): jobs without a folder and jobs that
did not finish scoring are named and left out of the table, never averaged away in silence.
Exit status: 0 when every job is in the table, 3 when some are missing or failed, 2 when no
table could be built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asd_lightning.sweeps.report import EXIT_SOME_LEFT_OUT, report_folders
from asd_lightning.utils.errors import EXIT_USER_ERROR, one_line
from asd_lightning.utils.resolvers import wandb_offline


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asd-report", description="One results table of finished runs: "
                                     "AUC / pAUC per section, official score per machine type and overall, "
                                     "mean ± std over seeds, swept settings as columns.")
    parser.add_argument("folders", nargs="+", type=Path, help="multirun / search folders or run folders")
    parser.add_argument("--out", type=Path, help="where to write results.csv and results.md (default: the one "
                        "folder given)")
    parser.add_argument("--wandb-project", help="also log the table to this W&B project (offline without an "
                        "API key), in a group named after the output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.out is None and len(args.folders) > 1:
        print("asd-report: several folders given; say where the table goes with --out <folder>", file=sys.stderr)
        return 2
    out = args.out or args.folders[0]
    wandb = {"project": args.wandb_project, "group": out.resolve().name,
             "offline": wandb_offline()} if args.wandb_project else None
    try:
        results = report_folders(args.folders, out, wandb)
    except (FileNotFoundError, ValueError) as error:
        print(f"asd-report: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    if results.table.empty:
        print("asd-report: no run has finished scoring", file=sys.stderr)
        return 2
    if results.problems:
        print(f"asd-report: {len(results.problems)} job(s) left out of the table:\n" +
              "\n".join(f"  {p}" for p in results.problems), file=sys.stderr)
        return EXIT_SOME_LEFT_OUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
