"""``asd-score``: score new recordings with a model bundle.

Examples::

    asd-score --bundle logs/train/runs/<run>/bundle/fan recordings/*.wav
    asd-score --bundle .../bundle/fan recordings/ --section 0 --out scores.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asd-score", description="Score WAV recordings with a model bundle "
                                "(16 kHz mono 16-bit, at least one analysis window long).")
    p.add_argument("--bundle", required=True, help="bundle folder (<run>/bundle/<machine>)")
    p.add_argument("inputs", nargs="+", help="WAV files or folders (searched recursively for *.wav)")
    p.add_argument("--section", type=int, help="section to score with (default: section_XX in the file name)")
    p.add_argument("--out", help="write the table as CSV (.csv) or JSON (.json)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 0 on success, 2 on any error (one line on stderr)."""
    args = _parser().parse_args(argv)
    try:
        from asd_lightning.deploy.bundle import ModelBundle

        bundle = ModelBundle.load(args.bundle)
        files = wav_files(args.inputs)
        start = time.perf_counter()
        table = bundle.score_files(files, args.section)
        elapsed = time.perf_counter() - start
        shown = table.assign(decision=table["decision"].map({0: "normal", 1: "anomalous"}))
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"{len(table)} file(s) of {bundle.machine} scored in {elapsed:.2f} s; threshold {bundle.threshold:.4f}")
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix == ".json":
                table.to_json(out, orient="records", indent=2)
            else:
                table.to_csv(out, index=False)
            print(f"wrote {out}")
    except (ValueError, OSError) as error:
        print(f"asd-score: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
