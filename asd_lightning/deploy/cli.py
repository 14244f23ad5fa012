"""``asd-score``: score new recordings with a model bundle.

Examples::

    asd-score --bundle logs/train/runs/<run>/bundle/fan recordings/*.wav
    asd-score --bundle .../bundle/fan recordings/ --section 0 --out scores.csv
    asd-score --bundle .../bundle/fan recordings_48k/ --resample

Every file that can be scored is scored; each one that cannot (unreadable, another format
without ``--resample`` / ``--requantize``, too short, no section) is named with the reason on
stderr and in the ``error`` column of ``--out``. Exit status: 0 all scored, 3 some files
failed, 2 nothing could be done (no bundle, no input files, unwritable output).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

EXIT_SOME_FAILED = 3
EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-score", description="Score WAV recordings with a model bundle "
                                "(its sample rate, mono 16-bit unless told otherwise, at least one analysis window long).")
    p.add_argument("--bundle", required=True, help="bundle folder (<run>/bundle/<machine>)")
    p.add_argument("inputs", nargs="+", help="WAV files or folders (searched recursively for *.wav)")
    p.add_argument("--section", type=int, help="section to score with (default: section_XX in the file name)")
    p.add_argument("--out", help="write the table as CSV (.csv) or JSON (.json), failed files included")
    p.add_argument("--resample", action="store_true", help="resample files of another sample rate")
    p.add_argument("--requantize", action="store_true", help="convert files of another sample format to 16-bit")
    p.add_argument("--channel", choices=("first", "mean", "error"),
                   help="multi-channel files: first channel, mean of all, or error (default: the bundle's)")
    return p


def wav_files(inputs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(item.rglob("*.wav"))
            if not found:
                raise FileNotFoundError(f"{item}: no .wav files in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


def cli_spelling(key: str, value: str) -> str:
    """The asd-score option for a decode setting: ``--resample``, ``--channel first``."""
    return f"--{key}" if value == "true" else f"--{key} {value}"


def format_table(table) -> str:
    """Scored files with scores in 6 significant digits (raw inlier scores can be about 1e-7)."""
    scored = table[table["error"] == ""].drop(columns="error")
    shown = scored.assign(score=scored["score"].map(lambda v: f"{v:.6g}"),
                          decision=scored["decision"].map({0: "normal", 1: "anomalous"}))
    return shown.to_string(index=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 0 when every file was scored, 3 when some failed, 2 on any other error."""
    args = _parser().parse_args(argv)
    try:
        from asd_lightning.deploy.bundle import ModelBundle

        bundle = ModelBundle.load(args.bundle)
        options = dataclasses.replace(bundle.decode_options, **{k: v for k, v in (
            ("resample", args.resample), ("requantize", args.requantize), ("channel", args.channel)) if v})
        files = wav_files(args.inputs)
        start = time.perf_counter()
        table = bundle.score_files(files, args.section, options, spelling=cli_spelling)
        elapsed = time.perf_counter() - start
        failed = table[table["error"] != ""]
        if len(failed) < len(table):
            print(format_table(table))
        print(f"{len(table) - len(failed)} of {len(table)} file(s) of {bundle.machine} scored in {elapsed:.2f} s; "
              f"threshold {bundle.threshold:.6g}")
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix == ".json":
                table.to_json(out, orient="records", indent=2)
            else:
                table.to_csv(out, index=False)
            print(f"wrote {out}")
        for row in failed.itertuples():
            print(f"asd-score: {row.error}", file=sys.stderr)
        if len(failed):
            print(f"asd-score: {len(failed)} of {len(table)} file(s) could not be scored", file=sys.stderr)
            return EXIT_SOME_FAILED
    except (ValueError, OSError) as error:
        print(f"asd-score: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
