#!/usr/bin/env bash
# Wheels of what a GPU image with torch, torchaudio, timm, lightning and scikit-learn lacks to run
# this project (hydra-core, omegaconf, soundfile and their needs), for Python 3.12 on x86-64 Linux,
# into .whl/ (git-ignored). benchmarks/gpu_check.sh installs them from there; nothing else travels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .whl hydra-core==1.3.8 omegaconf==2.3.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
# antlr4-python3-runtime 4.9.3 (omegaconf's parser) is published as a source archive only: build its wheel
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -1 .whl
