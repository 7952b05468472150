#!/usr/bin/env bash
# The GPU figures in one short session on one GPU: nst_jax against PyTorch eager and torch.compile, and the
# compiled memory of one step.
#
#   bash benchmarks/device.sh OUT_DIR
#
# Stages, most valuable first; each has its own time limit, taken from one budget (NST_BENCH_BUDGET seconds,
# default 330, start to finish), so a slow stage cannot starve the ones before it:
#
#   0. check     versions, nvidia-smi; stops here unless JAX sees a GPU     (at most 90 s)
#   1. 512 px    every method, jax / torch_eager / torch_compile           (at most 210 s)
#   2. memory    python benchmarks/memory.py --sizes=1024,2048 --no-rss --time --strips=8,1 --remat=no
#                --dtypes=bfloat16,float32: compiled bytes, device peak and ms per step (at most 120 s)
#   3. 1024 px   gram                                                       (what is left)
#   4. 1024 px   linear, poly, gaussian, bn, only if 150 s are still left
#
# NST_BENCH_FRAMEWORKS replaces the frameworks of stages 1, 3 and 4 (default jax,torch_eager,torch_compile), e.g.
# jax,torch_step,jax_bf16,torch_step_bf16 for the strongest PyTorch baseline (benchmarks.run's torch_step:
# the whole step under torch.compile max-autotune with CUDA graphs; several minutes of compilation per method,
# so give NST_BENCH_BUDGET accordingly). The time to an image is benchmarks/end_to_end.py (its own command).
#
# If PyTorch sees no GPU, stages 1, 3 and 4 are skipped (benchmarks.run needs both frameworks on the GPU).
# 3 rounds x 20 steps in blocks of 10 per method and framework: about 10 s of steps at 512 px on an H100;
# the rest of each stage is compilation (XLA: three programs per method; torch.compile: one graph per size).
#
# Writes to OUT_DIR (6 files at most): log.txt (everything printed), results.md (the tables of stages 1, 3 and
# 4, rewritten after each), results_512.json, results_1024.json, results_1024b.json (benchmarks.run's
# results.json of stages 1, 3, 4) and memory.md (stage 2, progress lines included, so a cut run keeps the
# cases it finished). benchmarks.run rewrites its results after each method, so a cut stage keeps the
# methods it finished. Its random VGG-19 .pth (no pretrained weights on the machine; 550 MB)
# stays in a temporary folder, never in OUT_DIR.
#
# Installs nothing: it needs python3 (or $PYTHON) with jax (CUDA), flax, optax, torch, torchvision, pillow,
# psutil and threadpoolctl (nst_jax's runs set the BLAS threads); not ml_collections. Run from anywhere;
# nst_jax is imported from this working tree.
# NST_BENCH_DRY=1 checks the script itself on a CPU machine in a few minutes (64 and 96 px, one round of 2
# steps, memory at 64 and 96 px): same stages and commands, no GPU needed.
set -uo pipefail
out="${1:?usage: bash benchmarks/device.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU: no 75 % grab by JAX
export TF_CPP_MIN_LOG_LEVEL=2
py="${PYTHON:-python3}"
if [[ "${NST_BENCH_DRY:-0}" == 1 ]]; then
  device=cpu small=64 large=96 rounds=1 steps=2 chunk=2 mem_sizes=64,96 budget="${NST_BENCH_BUDGET:-1200}"
  caps=(120 500 300)
else
  device=cuda small=512 large=1024 rounds=3 steps=20 chunk=10 mem_sizes=1024,2048 budget="${NST_BENCH_BUDGET:-330}"
  caps=(90 210 120)  # check, 512 px, memory
fi
start=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/nst_bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$out/log.txt"
: >"$log"

say() { echo "[device.sh $((SECONDS - start))s] $*" | tee -a "$log"; }

# stage NAME CAP FILE CMD...: runs CMD under a limit of min(CAP, budget left) seconds, its output to the log
# (and to FILE unless it is "-"); returns CMD's status (124 or 137: cut), 125 if too little time is left.
stage() {
  local name=$1 cap=$2 file=$3 limit rc cmd
  shift 3
  cmd="$*"
  limit=$((budget - (SECONDS - start) - 3))
  ((limit > cap)) && limit=$cap
  if ((limit < 20)); then
    say "$name: skipped, ${limit}s left"
    return 125
  fi
  say "$name: start, limit ${limit}s: ${cmd:0:300}"
  if [[ "$file" == - ]]; then
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log"
  else
    : >"$file"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log" "$file"
  fi
  rc=${PIPESTATUS[0]}
  say "$name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (cut at the limit)')"
  return "$rc"
}

# Stage 0: what the machine is; stop unless JAX sees a GPU.
say "budget ${budget}s, out $out, work $work"
{ nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  echo "nproc $(nproc)"; free -g | head -2; } 2>&1 | tee -a "$log"
stage check "${caps[0]}" - "$py" -c "
import sys, jax, jaxlib, flax, optax, numpy, torch, torchvision, threadpoolctl
print('python', sys.version.split()[0], '| jax', jax.__version__, 'jaxlib', jaxlib.__version__, '| flax',
      flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__)
print('jax backend', jax.default_backend(), 'devices', jax.devices())
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda,
      'cudnn', torch.backends.cudnn.version(), 'available', torch.cuda.is_available())
if torch.cuda.is_available():
    print('torch device', torch.cuda.get_device_name())
want = '$device'
if want == 'cuda' and jax.default_backend() != 'gpu':
    sys.exit('NO GPU: JAX sees ' + str(jax.devices()) + ' (no CUDA plugin or no GPU); nothing to measure')
if want == 'cuda' and not torch.cuda.is_available():
    sys.exit(4)
"
rc=$?
torch_ok=1
if ((rc == 4)); then
  torch_ok=0
  say "PyTorch sees no GPU: the speed tables are skipped, the memory analysis runs"
elif ((rc != 0)); then
  say "ABORT: the check failed (exit $rc; see above): no GPU for JAX, or python3 lacks a package"
  exit 1
fi

# bench NAME CAP SIZE METHODS TAG: python -m benchmarks.run in $work/TAG; its JSON to results_TAG.json and
# every table so far to results.md.
bench() {
  local name=$1 cap=$2 size=$3 methods=$4 tag=$5 rc d
  if ((!torch_ok)); then
    say "$name: skipped, PyTorch sees no GPU"
    return 125
  fi
  mkdir -p "$work/$tag"
  for d in "$work"/*/vgg19-random-seed0.pth; do  # the random weights of an earlier stage: same file, no redo
    [[ -f "$d" && ! -e "$work/$tag/vgg19-random-seed0.pth" ]] && ln "$d" "$work/$tag/"
  done
  stage "$name" "$cap" - "$py" -m benchmarks.run --out="$work/$tag" --device="$device" --sizes="$size" \
    --methods="$methods" --frameworks="${NST_BENCH_FRAMEWORKS:-jax,torch_eager,torch_compile}" --rounds="$rounds" \
    --steps="$steps" --chunk="$chunk"
  rc=$?
  [[ -f "$work/$tag/results.json" ]] && cp "$work/$tag/results.json" "$out/results_$tag.json"
  for d in "$small" "$large" "${large}b"; do
    [[ -f "$work/$d/results.md" ]] && printf '## %s px\n\n%s\n\n' "${d%b}" "$(cat "$work/$d/results.md")"
  done >"$work/results.md"
  [[ -s "$work/results.md" ]] && cp "$work/results.md" "$out/results.md"
  return "$rc"
}

bench "$small px" "${caps[1]}" "$small" gram,linear,poly,gaussian,bn "$small"
stage memory "${caps[2]}" "$out/memory.md" "$py" benchmarks/memory.py --sizes="$mem_sizes" --no-rss --time \
  --strips=8,1 --remat=no --dtypes=bfloat16,float32
bench "$large px gram" "$budget" "$large" gram "$large"
if ((budget - (SECONDS - start) >= 150)); then
  bench "$large px other methods" "$budget" "$large" linear,poly,gaussian,bn "${large}b"
else
  say "$large px other methods: skipped, $((budget - (SECONDS - start)))s left (150 s needed)"
fi
say "done; files in $out:"
ls -l "$out" | tee -a "$log"
