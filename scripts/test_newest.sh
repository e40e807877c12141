#!/usr/bin/env bash
# The suite against today's releases of every dependency, in a shuffled order: what a user who
# runs `pip install pefty-whisper` gets, beside the pinned stack (scripts/constraints.txt) that
# `make test` and CI install. A failure here is a release that will break users next: pin it
# away or fix the code, then move the constraint.
#
#   bash scripts/test_newest.sh            # a random order (the seed is printed)
#   bash scripts/test_newest.sh 12345      # that order again
#
# The venv sees the machine's packages and keeps its torch and deepspeed (a bare torch
# requirement may pull a multi-GB CUDA build; deepspeed builds only against the torch it finds).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-newest}
SEED=${1:-$RANDOM$RANDOM}

"$PYTHON" -m venv --system-site-packages "$VENV"
keep="$VENV/keep.txt"
"$VENV/bin/python" - > "$keep" <<'PY'
import importlib.metadata as metadata
for name in ("torch", "deepspeed"):
    print(f"{name}=={metadata.version(name)}")
PY
echo "[newest] upgrading every dependency except $(tr '\n' ' ' < "$keep")"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade \
  --upgrade-strategy eager -c "$keep" -e ".[export,serve,plot,demo,dev,track]"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as metadata
names = ("transformers", "accelerate", "peft", "datasets", "bitsandbytes", "ctranslate2",
         "faster-whisper", "onnxruntime", "fastapi", "uvicorn", "pytest", "selenium")
print("[newest] " + ", ".join(f"{n} {metadata.version(n)}" for n in names))
PY
echo "[newest] pytest -p randomly --randomly-seed=$SEED"
"$VENV/bin/python" -m pytest -q -p randomly --randomly-seed="$SEED"
