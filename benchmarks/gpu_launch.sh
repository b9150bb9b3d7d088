#!/usr/bin/env bash
# GPU check of the launcher (issue 6): run the rendered torchrun, accelerate-FSDP and accelerate-DeepSpeed jobs on ONE
# GPU (num_processes 1) for a few steps through the real launch path (launch/submit.py -> submitit's local executor ->
# launch/job.py NodeLaunch -> the planned command with its generated accelerate config), then report loss and tokens/s.
#
# Two steps, because the GPU machine has no network and lacks some packages:
#   1. here (with network):   bash benchmarks/gpu_launch.sh --fetch-wheels     # wheels into .whl/ (git-ignored)
#   2. on the GPU machine:    bash benchmarks/gpu_launch.sh [OUT_DIR]          # OUT_DIR default: $OUT or /tmp/gpu_launch
#      (device tool: run(command="bash benchmarks/gpu_launch.sh", carry=[".whl"], timeout_s=540))
# Environment: STEPS (default 60), LAUNCHERS (default "torchrun fsdp deepspeed"),
#              EXPERIMENT (default configs/experiments/autoencoder.yaml), PYTHON (default python3).
# Output: a markdown table on stdout and in OUT_DIR/gpu_launch.md; each run's log tail when it fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # Packages the GPU image lacks (its python is 3.12): submitit, zstandard, deepspeed and deepspeed's missing needs.
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    PIP=(.venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl)
    "${PIP[@]}" submitit==1.5.4 zstandard==0.25.0 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 \
        annotated-types==0.8.0 typing-inspection==0.4.5 || exit 1
    # deepspeed is a source package: build a pure-python wheel (no compiled ops) with the torch installed here
    DS_BUILD_OPS=0 .venv/bin/python -m pip wheel --no-deps --no-build-isolation -w .whl deepspeed==0.19.8 || exit 1
    ls -la .whl
    exit 0
fi

OUT_DIR=${1:-${OUT:-/tmp/gpu_launch}}  # only logs, configs and the table: $OUT brings back at most 8 files
WORK=${WORK:-/tmp/gpu_launch_work}     # run directories and prepared data
mkdir -p "$OUT_DIR" "$WORK"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MEMORYMODELS_STATE="$WORK/state"
STEPS=${STEPS:-60}
LAUNCHERS=${LAUNCHERS:-torchrun fsdp deepspeed}
EXPERIMENT=${EXPERIMENT:-configs/experiments/autoencoder.yaml}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
"$PYTHON" - <<'EOF'
import importlib, torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
for name in ("accelerate", "transformers", "submitit", "deepspeed", "zstandard"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:  # report and go on: that launcher's row will say why it failed
        print(f"{name}: not importable ({exc})")
EOF

table="$OUT_DIR/gpu_launch.md"
{
    echo "| launcher | exit | steps | loss | eval loss | tokens/s | wall s |"
    echo "|---|---|---|---|---|---|---|"
} > "$table"
for launcher in $LAUNCHERS; do
    echo "=== $launcher: $STEPS steps on one GPU ==="
    start=$(date +%s)
    # h100x2 with one GPU and the local executor: the same plan a Slurm job gets, run on this machine; one checkpoint
    # root per launcher (the run identity does not include the launcher, and FSDP checkpoints are sharded)
    timeout 170 "$PYTHON" launch/submit.py --profile h100x2 --launcher "$launcher" --experiment "$EXPERIMENT" \
        --set profile.executor=local --set profile.gpus_per_node=1 \
        --set "profile.checkpoint_root=$WORK/runs/$launcher" --set "profile.data_root=$WORK/state/cache" \
        --set "train.max_steps=$STEPS" --set train.eval_steps=0 --set "train.save_steps=$STEPS" \
        --set train.logging_steps=10 --set train.warmup_steps=10 > "$OUT_DIR/$launcher.log" 2>&1
    code=$?
    wall=$(( $(date +%s) - start ))
    tail -25 "$OUT_DIR/$launcher.log"
    run_dir=$(grep -m1 '^  run dir' "$OUT_DIR/$launcher.log" | awk '{print $3}')
    "$PYTHON" - "$launcher" "$code" "$wall" "${run_dir:-none}" >> "$table" <<'EOF'
import sys
from pathlib import Path
launcher, code, wall, run_dir = sys.argv[1:]
p = {}
if Path(run_dir).is_dir():
    from memorymodels.runs import run_progress
    p = run_progress(run_dir)
fmt = lambda v, f: "-" if v is None else format(v, f)
print(f"| {launcher} | {code} | {p.get('step') or '-'} | {fmt(p.get('loss'), '.4f')} | {fmt(p.get('eval_loss'), '.4f')} "
      f"| {fmt(p.get('tokens_per_s'), '.0f')} | {wall} |")
EOF
    if [[ -n "$run_dir" && -d "$run_dir/launch" ]]; then
        cp "$run_dir/launch/accelerate_config.yaml" "$OUT_DIR/$launcher.accelerate_config.yaml" 2>/dev/null
    fi
done
echo
cat "$table"
