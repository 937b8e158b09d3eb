#!/usr/bin/env bash
# The one prepared GPU run (issue "GPU: run every CUDA path for the first time"):
# GPU leases are short and each machine start costs minutes, so everything a
# lent CUDA machine should do is here, in one command, well under 10 minutes.
#
#   bash benchmarks/gpu/run.sh OUT_DIR          # on the GPU machine, from the repo root
#   BPCORE_GPU_DRY_RUN=1 bash benchmarks/gpu/run.sh /tmp/out   # here: checks the plumbing
#
# It expects numpy, cupy, torch and jax on the machine (the lent image has them)
# and installs the pure-Python rest from wheels carried in .whl/ (see the
# device README: pip download ... -d .whl array-api-compat array-api-strict
# pytest pytest-benchmark threadpoolctl pluggy iniconfig packaging ...). It
# writes into OUT_DIR: env.txt (nvidia-smi, versions), tests.log (the GPU tests
# with bpcore's CUDA kernels on, BPCORE_CUPY_FAST=1), bench.{json,md} (the GPU
# rows beside PyTorch eager, torch.compile and the cuBLAS floor) and status.txt
# (one line per stage: ok / failed (exit code) / skipped). A stage that fails
# does not stop the others: rerun only what failed, by name:
#
#   STAGES="tests" bash benchmarks/gpu/run.sh OUT_DIR
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu/run.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/../.."
stages=${STAGES:-"env tests bench"}
dry=${BPCORE_GPU_DRY_RUN:-0}
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

status() { echo "$1: $2" | tee -a "$out/status.txt"; }
run_stage() {  # name, seconds, command...
    local name=$1 limit=$2; shift 2
    case " $stages " in *" $name "*) ;; *) status "$name" skipped; return;; esac
    if [ "$dry" = 1 ]; then echo "[dry run] $*" >"$out/$name.log"; status "$name" "dry run"; return; fi
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then status "$name" ok; else status "$name" "failed ($rc)"; fi
}

: >"$out/status.txt"
run_stage env 60 bash -c 'nvidia-smi; python3 -c "import bpcore, numpy, cupy, torch, jax; \
print(\"bpcore\", bpcore.__version__, \"numpy\", numpy.__version__, \"cupy\", cupy.__version__, \
\"torch\", torch.__version__, torch.cuda.is_available(), \"jax\", jax.__version__, jax.devices())"'
# the whole suite's GPU half (CuPy through the xp fixture, torch CUDA), fused kernels on
run_stage tests 300 env BPCORE_CUPY_FAST=1 python3 -m pytest -q -p no:cacheprovider -m gpu \
    -o addopts="-ra --strict-markers" tests
run_stage bench 240 python3 -m bpcore bench --device gpu --dtype float32 --workloads seed,wide \
    --sizes 16,256,4096 --backends cupy,torch,jax-compiled --peers torch-eager,torch-compile,floor \
    --json "$out/bench.json" --markdown "$out/bench.md"
cp "$out/status.txt" "$out/summary.txt"
tail -n 1 "$out/tests.log" >>"$out/summary.txt" 2>/dev/null || true
cat "$out/summary.txt"
