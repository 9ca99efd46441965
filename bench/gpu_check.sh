#!/usr/bin/env bash
# The one command to run on a GPU machine: about 7 minutes, every stage time-boxed, logs in $OUT.
#
#   bash bench/gpu_check.sh              # on the GPU machine (its own python3, CuPy, torch)
#   bash bench/gpu_check.sh --dry-run    # here, on the CuPy stand-in (tests/fake_cupy): CI runs it
#
# Stages (bench/GPU.md says what each records and why):
#   1 versions     GPU, driver, CUDA, CuPy, torch, cuDNN
#   2 compile      a cold NVRTC compile of every kernels/cuda/*.cu, registers and local memory per kernel
#   3 pytest-gpu   pytest -m gpu on the cupy backend, in parallel, each test time-boxed
#   4 parity       LeNet and LSTM steps, numpy against cupy, float64 and float32, under CuPy's sync guard
#   5 torch-train  training steps against PyTorch on CUDA (TF32 off on both sides)
#   6 ops          the ops at the seed shapes and at batch 1,024 against PyTorch/cuDNN
#   7 sanitizer    compute-sanitizer racecheck and memcheck on the reduction and scatter kernels
#
# Nothing is installed from the network. What the GPU machine lacks (the tensorboardX and mlxtend
# wheels, the MNIST test files) is read from one folder, $GPU_PACK (default .gpu-pack, filled here by
# `make gpu-pack` and carried along). A stage that the remaining budget cannot hold is skipped, and
# says so. The stage table is printed at the end and written to $OUT/stages.txt; each stage's log is
# $OUT/<n>-<name>.log. Exit status: 0 when no stage failed (skips allowed), 1 otherwise.
set -u

DRY=0
BUDGET=${GPU_CHECK_BUDGET:-420}  # seconds for all stages: 7 minutes
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --budget) shift; BUDGET=$1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --budget SECONDS)" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
PACK=${GPU_PACK:-$ROOT/.gpu-pack}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset SCRATCHNET_BACKEND SCRATCHNET_FAKE_CUPY

if [ "$DRY" = 1 ]; then
    # The stand-in is `cupy` (and `cupyx`): the same Python code runs, on NumPy and the host shim.
    export PYTHONPATH="$ROOT/tests/fake_cupy:$PYTHONPATH"
    # The one-thread host shim: the dry run checks the script, not the kernels (make test does that).
    export SCRATCHNET_FAKE_CUPY_SHIM=single
    MODE="dry run (CuPy stand-in, one-thread host shim)"
else
    MODE="GPU"
    # The pack: wheels installed into a private folder, MNIST's test files where scratchnet looks.
    if [ -d "$PACK" ]; then
        if ls "$PACK"/*.whl >/dev/null 2>&1; then
            "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$PACK"/*.whl \
                && export PYTHONPATH="$PYTHONPATH:$WORK/site"
        fi
        [ -d "$PACK/data/mnist" ] && export SCRATCHNET_DATA="$PACK/data"
    else
        echo "gpu_check.sh: no pack at $PACK (make gpu-pack, then carry it): stages needing data may fail" >&2
    fi
    export CUPY_CACHE_DIR="$WORK/cupy-cache"  # a cold compile, whatever ran before
fi

START=$(date +%s)
: >"$OUT/stages.txt"
FAILED=0
ROWS=()

# stage NUMBER NAME SECONDS COMMAND...: run COMMAND for at most SECONDS (fewer if the budget is short).
stage() {
    local num=$1 name=$2 limit=$3
    shift 3
    local log="$OUT/$num-$name.log" left=$((BUDGET - ($(date +%s) - START))) status t0 rc
    if [ "$left" -lt 20 ] || [ "$left" -lt $((limit / 3)) ]; then
        ROWS+=("$(printf '  %s  %-12s %-7s %4ss  %s' "$num" "$name" skip 0 "budget: ${left}s left of ${BUDGET}s")")
        echo "skipped: ${left}s left" >"$log"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== stage $num $name (at most ${limit}s) =="
    t0=$(date +%s)
    # bash -c: a stage may be one of the functions below (exported), which timeout cannot run itself.
    timeout -k 10 "$limit" bash -c '"$@"' stage "$@" >"$log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=timeout; FAILED=1 ;;
        99) status=skip ;;  # the stage said it cannot run here (its log says why)
        *) status=FAIL; FAILED=1 ;;
    esac
    local note
    note=$(grep -m1 '^NOTE:' "$log" | cut -c7- | cut -c1-70)
    ROWS+=("$(printf '  %s  %-12s %-7s %4ss  %s' "$num" "$name" "$status" $(($(date +%s) - t0)) "$note")")
    tail -n 3 "$log" | sed 's/^/    /'
}

# --- 1. versions ----------------------------------------------------------------------------------
cat >"$WORK/versions.py" <<'EOF'
import platform, sys
import cupy
print("python", platform.python_version(), platform.machine())
print("cupy", cupy.__version__, "(stand-in)" if getattr(cupy, "STAND_IN", False) else "")
rt = cupy.cuda.runtime
props = rt.getDeviceProperties(0)
name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
print("gpu", name, f"sm_{props['major']}{props['minor']}", "x", rt.getDeviceCount())
print("cuda runtime", rt.runtimeGetVersion(), "driver", rt.driverGetVersion())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
          torch.backends.cudnn.version() if torch.cuda.is_available() else "n/a (no CUDA)")
except ImportError as e:
    print("torch: not importable:", e)
for mod in ("numba", "tensorboardX", "mlxtend", "xdist", "pytest_timeout"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except ImportError:
        print(mod, "missing")
print(f"NOTE: {name}, CuPy {cupy.__version__}")
EOF
versions() {
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    if [ "$DRY" = 1 ]; then
        "$PYTHON" -c "import sys; sys.modules['torch'] = None; exec(open('$WORK/versions.py').read())"
    else
        "$PYTHON" "$WORK/versions.py"
    fi
}

# --- 2. a cold compile of every module ------------------------------------------------------------
cat >"$WORK/compile.py" <<'EOF'
import re, time
import numpy
from scratchnet.kernels.cuda import compiler as cuda

total = 0.0
print(f"{'module':10s} {'dtype':8s} {'kernel':28s} {'regs':>5s} {'local B':>8s} {'compile s':>9s}")
for path in cuda.source_files():
    names = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', path.read_text())
    for dtype in ("float32", "float64"):
        t0 = time.perf_counter()
        cuda.module(path.stem, dtype)
        dt = time.perf_counter() - t0
        total += dt
        for i, k in enumerate(names):
            f = cuda.function(path.stem, k, dtype)
            a = f.attributes
            print(f"{path.stem:10s} {dtype:8s} {k:28s} {a['num_regs']:5d} {a['local_size_bytes']:8d} "
                  f"{dt if i == 0 else 0:9.2f}")
print(f"NOTE: {len(cuda.source_files())} modules x 2 dtypes, {total:.1f} s")
EOF

# --- 3. pytest -m gpu ------------------------------------------------------------------------------
pytest_gpu() {
    if [ "$DRY" = 1 ]; then
        # The stand-in's run of the marker on one file: that the selection and the flags still work.
        SCRATCHNET_FAKE_CUPY=1 SCRATCHNET_BACKEND=cupy "$PYTHON" -m pytest -q -p no:cacheprovider -rfE \
            -m gpu tests/test_dropout.py -k "same_seed or rate_zero"
    else
        local par=()
        "$PYTHON" -c "import xdist" 2>/dev/null && par=(-n auto)
        "$PYTHON" -c "import pytest_timeout" 2>/dev/null && par+=(--timeout 90)
        SCRATCHNET_BACKEND=cupy "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs -m gpu "${par[@]}" \
            --junitxml "$OUT/pytest-gpu.xml" tests
    fi
    local rc=$?
    echo "NOTE: pytest exit $rc"
    return $rc
}

# --- 4. parity, numpy against cupy, under the guard -------------------------------------------------
cat >"$WORK/parity.py" <<'EOF'
import sys, traceback
import numpy as np
import cupy, cupyx
import scratchnet as sn

STEPS = int(sys.argv[1])
BATCH = int(sys.argv[2])
TOL = {"float64": 1e-9, "float32": 2e-3}
rng = np.random.default_rng(0)
data = {"lenet": rng.standard_normal((BATCH, 28, 28, 1)), "lstm": rng.standard_normal((BATCH, 28, 28))}
labels = rng.integers(0, 10, BATCH)


def run(backend, model, dtype, guard=False):
    with sn.use_backend(backend):
        sn.random.seed(0)
        # Dropout off: the GPU draws its masks by its own hash (kernels/cuda/dropout.cu), not NumPy's bits.
        extra = {"units": 32} if model == "lstm" and BATCH < 16 else {}
        recipe = sn.zoo.build(model, batch_size=BATCH, dtype=dtype, dropout=0.0, **extra)
        xp = sn.get_backend().xp
        x, y = xp.asarray(data[model].astype(dtype)), xp.asarray(labels)
        losses = []
        for step in range(STEPS):
            if guard and step == STEPS - 1:
                # The first wait for the device inside a step, named: what the step still syncs on.
                try:
                    with cupyx.allow_synchronize(False):
                        recipe.train_step(x, y)
                    print(f"  guard: {model} {dtype}: no synchronisation in a step")
                except cupyx.DeviceSynchronized as e:
                    frame = [f for f in traceback.extract_tb(e.__traceback__) if "scratchnet" in f.filename][-1]
                    print(f"  guard: {model} {dtype}: first sync at {frame.filename.split('scratchnet/')[-1]}:"
                          f"{frame.lineno} ({frame.name})")
                    return None
            losses.append(recipe.train_step(x, y)["loss"])
        return losses, {p.name: sn.to_numpy(p.value) for p in recipe.model.parameters()}


bad = 0
print(f"{'model':6s} {'dtype':8s} {'loss numpy':>12s} {'loss cupy':>12s} {'max rel diff':>12s}  tolerance")
for model in ("lenet", "lstm"):
    for dtype in ("float64", "float32"):
        want_loss, want = run("numpy", model, dtype)
        got_loss, got = run("cupy", model, dtype)
        worst = max(float(np.max(np.abs(got[k] - want[k]) / (np.abs(want[k]) + 1e-3))) for k in want)
        ok = worst <= TOL[dtype]
        bad += not ok
        print(f"{model:6s} {dtype:8s} {want_loss[-1]:12.6f} {got_loss[-1]:12.6f} {worst:12.2e}  "
              f"{TOL[dtype]:.0e} {'ok' if ok else 'FAIL'}")
        run("cupy", model, dtype, guard=True)
print(f"NOTE: {4 - bad}/4 within tolerance after {STEPS} steps")
sys.exit(1 if bad else 0)
EOF

# --- 5. training steps against PyTorch on CUDA ---------------------------------------------------------
cat >"$WORK/torch_train.py" <<'EOF'
import runpy, sys
# TF32 off on both sides: CuPy's matmul does not use it unless CUPY_TF32=1; PyTorch's cuDNN
# convolutions do by default (torch.backends.cudnn.allow_tf32), its matmuls do not.
if "torch" in sys.argv[sys.argv.index("--frameworks") + 1]:
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print("TF32 off: torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False; CUPY_TF32 unset")
else:
    print("scratchnet alone (torch is not importable here)")
sys.path.insert(0, "bench")  # bench/common.py
print("NOTE: bench/train.py " + " ".join(sys.argv[1:8]))
sys.argv = ["bench/train.py", *sys.argv[1:]]
runpy.run_path("bench/train.py", run_name="__main__")
EOF
torch_train() {
    local fw=scratchnet
    "$PYTHON" -c "import torch" 2>/dev/null && fw=scratchnet,torch
    if [ "$DRY" = 1 ]; then
        "$PYTHON" "$WORK/torch_train.py" --backend cupy --models lenet --frameworks scratchnet --steps 2 \
            --block 1 --settle 0 --batch-size 8
    else
        local test=()
        [ -d "$PACK/data/mnist" ] && test=(--test-data "$PACK/data/mnist")
        env -u CUPY_TF32 "$PYTHON" "$WORK/torch_train.py" --backend cupy --models lenet,lstm --frameworks "$fw" \
            --steps 60 --block 20 --settle 0 "${test[@]}"
    fi
}

# --- 6. ops against PyTorch/cuDNN ----------------------------------------------------------------------
ops() {
    if [ "$DRY" = 1 ]; then
        "$PYTHON" bench/ops.py --backend cupy --peers none --rounds 1 --block 1 --warmup 0 --settle 0 --only dense
    else
        "$PYTHON" bench/ops.py --backend cupy --peers torch --rounds 3 --block 3 --settle 0 \
            && "$PYTHON" bench/ops.py --backend cupy --peers torch --rounds 3 --block 3 --settle 0 --large
    fi
    local rc=$?
    echo "NOTE: seed shapes$([ "$DRY" = 1 ] || echo ' and batch 1,024'), exit $rc"
    return $rc
}

# --- 7. compute-sanitizer on the reduction and scatter kernels ------------------------------------------
cat >"$WORK/kernels.py" <<'EOF'
# The kernels with shared memory, barriers or scatters, at sizes that use many blocks and threads.
import numpy as np
import cupy
import scratchnet as sn

rng = np.random.default_rng(0)
with sn.use_backend("cupy") as be:
    for dtype in (np.float32, np.float64):
        logits = cupy.asarray(rng.standard_normal((300, 1000)).astype(dtype))
        labels = cupy.asarray(rng.integers(0, 1000, 300))
        be.softmax_cross_entropy_forward(logits, labels)
        ids = cupy.asarray(rng.integers(0, 50, (64, 20)))
        be.embedding_backward(ids, cupy.asarray(rng.standard_normal((64, 20, 16)).astype(dtype)), 50)
        x = cupy.asarray(rng.standard_normal((8, 12, 12, 4)).astype(dtype))
        y, argmax = be.max_pool2d_forward(x, 3, 3, 1, 1, (1, 1, 1, 1))
        be.max_pool2d_backward(cupy.ones_like(y), argmax, x.shape)
        w, g, m, v = (cupy.asarray(rng.standard_normal(5000).astype(dtype)) for _ in range(4))
        be.adam_update(w, g, m, cupy.abs(v), 1e-3, 0.9, 0.999, 1e-7)
    cupy.cuda.get_current_stream().synchronize()
print("kernels ran")
EOF
sanitizer() {
    if ! command -v compute-sanitizer >/dev/null; then
        if [ "$DRY" = 1 ]; then
            # No sanitizer here: run the launches it would watch, so the script cannot rot.
            "$PYTHON" "$WORK/kernels.py" || return 1
            echo "NOTE: launches only (no compute-sanitizer on this machine)"
            return 0
        fi
        echo "NOTE: compute-sanitizer is not on PATH"
        return 99
    fi
    local tool rc=0
    for tool in racecheck memcheck; do
        echo "--- $tool"
        compute-sanitizer --tool "$tool" --error-exitcode 3 "$PYTHON" "$WORK/kernels.py" || rc=1
    done
    echo "NOTE: racecheck and memcheck, exit $rc"
    return $rc
}

export DRY PYTHON WORK OUT PACK
export -f versions pytest_gpu torch_train ops sanitizer
echo "gpu_check.sh: $MODE, budget ${BUDGET}s, logs in $OUT"
stage 1 versions    20  versions
stage 2 compile     45  "$PYTHON" "$WORK/compile.py"
stage 3 pytest-gpu 120  pytest_gpu
if [ "$DRY" = 1 ]; then
    stage 4 parity  40  "$PYTHON" "$WORK/parity.py" 2 4
else
    stage 4 parity  45  "$PYTHON" "$WORK/parity.py" 3 32
fi
stage 5 torch-train 60  torch_train
stage 6 ops         60  ops
stage 7 sanitizer   50  sanitizer

{
    echo "gpu_check.sh: $MODE, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(($(date +%s) - START))s of ${BUDGET}s"
    echo "  #  stage        status   time  note"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT/stages.txt"
cat "$OUT/stages.txt"
cp "$OUT/stages.txt" "$OUT/summary.txt"
for f in "$OUT"/[1-7]-*.log; do
    echo "--- $(basename "$f")"
    grep -E 'NOTE:|guard:|FAIL|Error|error' "$f" | head -n 8
done >>"$OUT/summary.txt"
exit $FAILED
