"""``asd-evaluate``: official DCASE Task 2 scores of a folder of submission CSVs.

Example::

    asd-evaluate --year 2022 --scores outputs/run/scores --root data/dcase2022 \\
        --ground-truth data/dcase2022_ground_truth --out outputs/run/eval

Ground truth comes from the dataset's clip index: dev clips carry label and domain in their
names, anonymised evaluation clips need the official ground-truth CSVs (``--ground-truth``).
Every test clip of the evaluated machine types must have a score and every score a clip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from asd_lightning.metrics.official import evaluate, group_keys
from asd_lightning.metrics.submission import read_submission
from asd_lightning.metrics.two_bce_measure import PROTOCOLS, TwoBCEMeasure


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asd-evaluate", description="Official DCASE Task 2 scores of a folder of submission CSVs."
    )
    add = parser.add_argument
    add("--year", type=int, required=True, help="challenge year (2020, 2021, 2022, 2023, ...)")
    add("--scores", type=Path, required=True, help="folder of anomaly_score_*.csv (and decision_result_*.csv)")
    add("--root", type=Path, required=True, help="dataset root (above the machine-type folders)")
    add("--ground-truth", type=Path, help="official ground-truth CSV or folder, for evaluation-set clips")
    add("--out", type=Path, help="where to write scores.csv and scores.json (default: the --scores folder, "
        "unless it already holds them: a run's own table is never overwritten)")
    add("--machine-types", nargs="+", metavar="MACHINE",
        help="machine types to evaluate (default: every machine type that has score files)")
    add("--sections", nargs="+", type=int, metavar="N",
        help="section numbers (IDs in 2020) to evaluate (default: every section of the test clips)")
    add("--domains", nargs="+", choices=["source", "target"],
        help="domains of the test clips to evaluate (default: both; the two-BCE paper: source)")
    add("--protocol", choices=PROTOCOLS, default="official",
        help="two_bce adds the two-BCE paper's Table II measure (harmonic mean of AUC and pAUC per ID, "
             "machine type and over all) to the official table")
    return parser


def _listing(keys: pd.DataFrame, what: str) -> str:
    names = sorted(f"{r.machine}/{r.file}" for r in keys.itertuples())[:10]
    more = f", ... ({len(keys) - 10} more)" if len(keys) > 10 else ""
    return f"{len(keys)} {what}: {', '.join(names)}{more}"


def join_scores(clips: pd.DataFrame, scores: pd.DataFrame, year: int) -> pd.DataFrame:
    """Join submission scores to test clips by (machine, section, file) — 2021 also domain.

    Raises ``ValueError`` for clips without a score, scores without a clip, and clips whose
    label or domain is unknown.
    """
    keys = group_keys(year) + ["file"]
    clips = clips[clips["split"] == "test"]
    if "domain" not in keys:  # 2020/2022+: the domain comes from the dataset (file name or ground truth)
        scores = scores.drop(columns="domain", errors="ignore")
    merged = clips.merge(scores, on=keys, how="outer", indicator=True, validate="one_to_one")
    extra = merged[merged["_merge"] == "right_only"]
    moved = extra[["machine", "section", "file"]].merge(clips[["machine", "section", "file"]], on=["machine", "file"],
                                                        suffixes=("", "_clip"))
    if len(moved):
        r = moved.iloc[0]
        raise ValueError(f"{len(moved)} scored file(s) are in another section's file, e.g. {r.machine}/{r.file} "
                         f"is scored in section {int(r.section):02d}'s file but is a test clip of section "
                         f"{int(r.section_clip):02d}: its row belongs in that section's anomaly_score / "
                         "decision_result file")
    missing = merged[merged["_merge"] == "left_only"]
    if len(missing):
        raise ValueError(_listing(missing, "test clip(s) have no score"))
    if len(extra):
        raise ValueError(_listing(extra, "scored file(s) are not test clips of the dataset"))
    unknown = merged[(merged["label"] == "unknown") | (merged["domain"] == "unknown")]
    if len(unknown):
        raise ValueError(
            _listing(unknown, "clip(s) have an unknown label or domain")
            + "; evaluation clips need the official ground truth (--ground-truth)"
        )
    return merged.drop(columns="_merge")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``asd-evaluate``; returns 0 on success, 2 on any error (one line on stderr)."""
    args = _parser().parse_args(argv)
    try:
        from asd_lightning.data.clip_index import build_clip_index

        out = args.out or args.scores
        tables = ["scores.csv", "scores.json"] + (["two_bce_measure.json"] if args.protocol == "two_bce" else [])
        taken = [name for name in tables if (args.scores / name).exists()]
        if args.out is None and taken:
            raise ValueError(f"{args.scores} already holds {' and '.join(taken)} (the run's own table); "
                             "pass --out <folder> to write the table elsewhere")
        scores = read_submission(args.scores, args.year)
        machines = args.machine_types or sorted(scores["machine"].unique())
        # only the scored machine types are indexed: other folders may hold anything
        clips = build_clip_index(args.root, args.year, machine_types=machines, splits=["test"],
                                 sections=args.sections, ground_truth=args.ground_truth)
        if args.sections is not None:
            scores = scores[scores["section"].isin(args.sections)]
        if args.domains is not None:
            unknown = clips[clips["domain"] == "unknown"]
            if len(unknown):
                raise ValueError(f"--domains needs the domain of every test clip; {len(unknown)} are anonymised "
                                 f"(e.g. {unknown['path'].iloc[0]}): pass --ground-truth")
            clips = clips[clips["domain"].isin(args.domains)]
            if "domain" in scores.columns and scores["domain"].isin(["source", "target"]).all():
                scores = scores[scores["domain"].isin(args.domains)]
        absent = sorted(set(machines) - set(clips["machine"]))
        if absent:
            raise ValueError(f"machine type(s) {absent} have no test clips under {args.root}")
        data = join_scores(clips, scores[scores["machine"].isin(machines)], args.year)
        report = evaluate(data, args.year)
        print(report.format_table())
        csv_path, json_path = report.save(out)
        print(f"wrote {csv_path} and {json_path}")
        if args.protocol == "two_bce":
            measure = TwoBCEMeasure.from_report(report)
            print(measure.format_table())
            print(f"wrote {measure.save(out)}")
    except (ValueError, OSError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"asd-evaluate: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
