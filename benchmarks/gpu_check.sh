#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): environment, throughput and the paper runs' implied
# time per experiment, a profile of the steps, and a method comparison at a fixed GPU budget;
# JSON + Markdown under $OUT (or --out, default benchmarks/gpu_check/).
#   bash benchmarks/gpu_check.sh            # a GPU machine: about 8 minutes on one H200
#   bash benchmarks/gpu_check.sh --quick    # any machine: tiny sizes on the CPU, about a minute
# It uses .venv when there is one; otherwise python3 (e.g. a GPU image with torch, torchaudio,
# timm, lightning and scikit-learn), after installing the wheels in .whl/ of what it lacks
# (hydra-core, omegaconf, soundfile...: bash benchmarks/fetch_gpu_wheels.sh on a machine with pip).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
if ! "$PY" -c "import hydra, omegaconf, soundfile" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/asd-site .whl/*.whl
        export PYTHONPATH=/tmp/asd-site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "gpu_check: $PY lacks hydra-core, omegaconf or soundfile and .whl/ holds no wheels:" \
             "run bash benchmarks/fetch_gpu_wheels.sh where pip reaches PyPI" >&2
        exit 2
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
