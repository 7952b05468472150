#!/usr/bin/env bash
# The GPU table: nst_jax against PyTorch eager and torch.compile on one GPU, 512 and 1024 px, every method.
#
#   bash benchmarks/device.sh OUT_DIR
#
# Writes OUT_DIR/results.json, OUT_DIR/results.md and OUT_DIR/log.txt. Installs nothing: it needs python3 with
# jax (CUDA), flax, optax, torch, torchvision, pillow and psutil, which the H100 machines have. Run from the
# repository root (nst_jax is imported from the working tree). Budget: under 8 minutes on one H100 (the run is
# cut at 450 s; results.json is rewritten after each size, so 512 px survives a cut).
set -euo pipefail
out="${1:?usage: bash benchmarks/device.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU: no 75 % grab by JAX
export TF_CPP_MIN_LOG_LEVEL=2
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__,
torch.cuda.get_device_name())" 2>&1 | tee "$out/log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$out/log.txt" || true
timeout 450 python3 -m benchmarks.run --out="$out" --device=cuda --sizes=512,1024 \
  --rounds=3 --steps=20 --chunk=10 2>&1 | tee -a "$out/log.txt"
