#!/usr/bin/env bash
# Install everything pefty-whisper needs, in the one order that works:
#   1. espeak-ng (Debian) for the synthetic sample corpus; chromium, chromium-driver and
#      fonts-noto-cjk for the web page's browser test,
#   2. torch first (TORCH_SPEC; on a CPU machine torch==2.13.0 takes the local CPU wheel,
#      while a bare `torch` requirement could pull a multi-GB CUDA build),
#   3. the package with its extras,
#   4. deepspeed with --no-build-isolation, so it builds against the torch from step 2.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
DEEPSPEED_SPEC=${DEEPSPEED_SPEC:-deepspeed==0.19.8}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "[setup] installing espeak-ng"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

# Debian's chromium and its driver run the page at / in tests/integration/test_web_page.py;
# fonts-noto-cjk draws its Korean (and that of the page's screenshot) instead of boxes.
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser+=(chromium-driver)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || browser+=(fonts-noto-cjk)
if [ ${#browser[@]} -gt 0 ]; then
  echo "[setup] installing ${browser[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${browser[@]}" >/dev/null
fi

pip_install() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi

echo "[setup] installing pefty-whisper with extras"
pip_install -c scripts/constraints.txt -e ".[export,serve,plot,demo,dev,track]"

if ! "$PYTHON" -c "import deepspeed" >/dev/null 2>&1; then
  echo "[setup] installing $DEEPSPEED_SPEC (--no-build-isolation)"
  pip_install --no-build-isolation "$DEEPSPEED_SPEC"
fi
echo "[setup] done: $("$PYTHON" -c 'import torch, transformers, peft, deepspeed; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, deepspeed {deepspeed.__version__}")' 2>/dev/null)"
