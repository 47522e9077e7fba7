#!/usr/bin/env bash
# Create the separate virtualenv for the sb3-contrib side of the benchmark.
# torch needs a newer typing-extensions than TensorFlow 2.15 tolerates, so this
# must NOT be the tftrpo venv.
#   bash bench/setup_sb3_env.sh [VENV_DIR]      (default /tmp/tftrpo-bench-sb3)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-/tmp/tftrpo-bench-sb3}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip wheel
# 1) torch alone, pinned: pip takes the CPU wheel from the local wheel dir.
"$VENV/bin/python" -m pip install "$(grep -E '^torch==' "$HERE/requirements-sb3.txt")"
# 2) the rest, with torch held at the installed version.
"$VENV/bin/python" -m pip install -r "$HERE/requirements-sb3.txt"
"$VENV/bin/python" - <<'PY'
import torch, stable_baselines3, sb3_contrib, gymnasium, numpy
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("stable-baselines3", stable_baselines3.__version__)
print("sb3-contrib", sb3_contrib.__version__)
print("gymnasium", gymnasium.__version__, "numpy", numpy.__version__)
env = gymnasium.make("Hopper-v5"); env.reset(seed=0); print("Hopper-v5 ok")
PY
echo "sb3 venv ready: $VENV"
