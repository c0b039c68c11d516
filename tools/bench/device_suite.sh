#!/usr/bin/env bash
# The one-GPU device suite, in under 8 minutes:
#   1. train-step MFU (tools/bench/train_step.py) of the largest paper size that fits, trying
#      1.18b, then 364m, then 79m, each under a short timeout (an OOM or a slow compile falls
#      back to the next);
#   2. the 1.18b control-step latency (tools/bench/decode.py: one observation appended to a
#      1,024-token cache, then the action decoded with masked logits);
#   3. the generalist (experiments/generalist.py --stages=train, then --stages=eval) for the
#      time left; the trainer saves a checkpoint when the timeout's SIGTERM arrives, and the
#      evaluation's results.json is copied to OUT/results.json. Its data must already be in
#      --data_dir (the data stage takes hours: carry or generate it first); without it this
#      step is reported as skipped.
# Everything goes to OUT (--out, else $OUT, else ./device_suite_out): train_step.jsonl,
# decode.jsonl, logs/, generalist/ and summary.json.
#
#   bash tools/bench/device_suite.sh [--out=DIR] [--data_dir=DIR] [--budget_s=450]
#   bash tools/bench/device_suite.sh --dry_run   # CPU: shapes and tiny launches, no timing.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

DRY_RUN=0
OUT_DIR="${OUT:-$ROOT/device_suite_out}"
DATA_DIR="$HOME/.cache/gato_jax"
BUDGET_S=450 # 7.5 minutes: the whole suite stays under 8.
for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY_RUN=1 ;;
    --out=*) OUT_DIR="${arg#--out=}" ;;
    --data_dir=*) DATA_DIR="${arg#--data_dir=}" ;;
    --budget_s=*) BUDGET_S="${arg#--budget_s=}" ;;
    *)
      echo "device_suite.sh: unknown argument $arg (known: --dry_run --out= --data_dir= --budget_s=)" >&2
      exit 2
      ;;
  esac
done
if ! [[ "$BUDGET_S" =~ ^[0-9]+$ ]]; then
  echo "device_suite.sh: --budget_s must be a whole number of seconds, got $BUDGET_S" >&2
  exit 2
fi
mkdir -p "$OUT_DIR/logs"
START=$(date +%s)
CONFIG=experiments/configs/gato.py
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# run NAME TIMEOUT_S OUTPUT_FILE CMD...: prints the command, runs it under the timeout with
# stdout appended to OUTPUT_FILE (JSON lines) and stderr to logs/NAME.log; returns its status.
run() {
  local name="$1" limit="$2" output="$3"
  shift 3
  echo "+ [$name, timeout ${limit}s] $*"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" >>"$output" 2>"$OUT_DIR/logs/$name.log"
  local rc=$?
  echo "  -> exit $rc"
  return $rc
}

declare -A STATUS

if ((DRY_RUN)); then
  # Shapes of every paper size from jax.eval_shape (no memory), then each step's program
  # launched at the tiny size with tiny shapes: imports, flags and jitted code all run.
  export JAX_PLATFORMS=cpu
  DRY_LIMIT=300 # A guard against a hang: each launch takes seconds on an idle CPU.
  run shapes "$DRY_LIMIT" "$OUT_DIR/shapes.jsonl" "$PY" -c '
import json
from gato_jax.model import ModelConfig
from gato_jax.training.step import abstract_param_count
for size in ("1.18b", "364m", "79m"):
  print(json.dumps({"size": size, "params": abstract_param_count(ModelConfig.from_size(size))}))
'
  STATUS[shapes]=$?
  run train_step "$DRY_LIMIT" "$OUT_DIR/train_step.jsonl" "$PY" tools/bench/train_step.py \
    --config="$CONFIG:tiny" --sizes=tiny --config.mesh.shape=1,1,1 \
    --config.train.batch_size=2 --config.train.seq_len=32 --num_patches=0 \
    --cases=gato_actions --seconds=0
  STATUS[train_step]=$?
  run decode "$DRY_LIMIT" "$OUT_DIR/decode.jsonl" "$PY" tools/bench/decode.py \
    --config="$CONFIG:tiny" --sizes=tiny --context=64 --observation_tokens=8 \
    --action_tokens=2 --repeats=1
  STATUS[decode]=$?
  # absl exits 1 after printing --help: the flags listed are what tells it worked.
  run generalist "$DRY_LIMIT" "$OUT_DIR/logs/generalist.help" "$PY" experiments/generalist.py --help
  grep -q -- "--stages" "$OUT_DIR/logs/generalist.help"
  STATUS[generalist]=$?
else
  # 1. MFU: the largest size that compiles, fits and times within its timeout. Per-size batches
  # fill an 80 GB device with remat; seq_len is the paper's 1,024.
  STATUS[train_step]=1
  for size_batch in 1.18b:16 364m:32 79m:64; do
    size="${size_batch%%:*}" batch="${size_batch##*:}"
    limit=150
    [[ "$size" != "1.18b" ]] && limit=100
    if (($(left) < limit + 200)); then limit=$(($(left) - 200)); fi
    ((limit > 30)) || break
    if run "train_step_$size" "$limit" "$OUT_DIR/train_step.jsonl" "$PY" tools/bench/train_step.py \
      --config="$CONFIG:$size" --sizes="$size" --config.mesh.shape=1,1,1 \
      --config.train.batch_size="$batch" --config.train.seq_len=1024 --num_patches=0 \
      --cases=gato --seconds=10; then
      STATUS[train_step]=0
      break
    fi
  done
  # 2. The 1.18b control step.
  limit=90
  if (($(left) < limit + 120)); then limit=$(($(left) - 120)); fi
  STATUS[decode]=1
  if ((limit > 20)); then
    run decode "$limit" "$OUT_DIR/decode.jsonl" "$PY" tools/bench/decode.py \
      --config="$CONFIG:1.18b" --sizes=1.18b --context=1024 --repeats=20
    STATUS[decode]=$?
  fi
  # 3. The generalist for the time left: train (SIGTERM at the deadline saves a checkpoint),
  # then a short evaluation of the newest checkpoint.
  workdir="$OUT_DIR/generalist"
  eval_s=90
  train_s=$(($(left) - eval_s - 15))
  STATUS[generalist]=1
  if ((train_s > 30)); then
    run generalist_train "$train_s" "$OUT_DIR/logs/generalist_train.out" "$PY" \
      experiments/generalist.py --stages=train --workdir="$workdir" --data_dir="$DATA_DIR"
    train_rc=$?
    if [[ -d "$workdir/checkpoints" ]]; then
      run generalist_eval "$(($(left) - 10))" "$OUT_DIR/logs/generalist_eval.out" "$PY" \
        experiments/generalist.py --stages=eval --workdir="$workdir" --data_dir="$DATA_DIR" \
        --config.eval.episodes=2 --config.eval.task_episodes=""
      STATUS[generalist]=$?
      newest=$(ls -d "$workdir"/eval/*/ 2>/dev/null | sort -t/ -k1 -V | tail -1)
      if [[ -n "$newest" && -f "$newest/results.json" ]]; then
        cp "$newest/results.json" "$OUT_DIR/results.json"
      fi
    else
      echo "  generalist: no checkpoint (train exit $train_rc; is its data in $DATA_DIR?)"
    fi
  fi
fi

"$PY" - "$OUT_DIR" "$DRY_RUN" "$(($(date +%s) - START))" \
  "${STATUS[train_step]:-1}" "${STATUS[decode]:-1}" "${STATUS[generalist]:-1}" <<'EOF'
import json, os, sys

out, dry_run, seconds, *codes = sys.argv[1:]
steps = dict(zip(("train_step", "decode", "generalist"), (int(c) for c in codes)))


def lines(name):
  path = os.path.join(out, name)
  if not os.path.exists(path):
    return []
  return [json.loads(l) for l in open(path) if l.startswith("{")]


summary = {
  "dry_run": dry_run == "1",
  "seconds": int(seconds),
  "exit_codes": steps,
  "train_step": lines("train_step.jsonl"),
  "decode": lines("decode.jsonl"),
  "results_json": os.path.exists(os.path.join(out, "results.json")),
}
with open(os.path.join(out, "summary.json"), "w") as f:
  json.dump(summary, f, indent=1)
print(json.dumps({k: summary[k] for k in ("dry_run", "seconds", "exit_codes", "results_json")}))
EOF
if ((DRY_RUN)); then
  # Every launch must have worked: that is what the dry run checks.
  for code in "${STATUS[@]}"; do ((code == 0)) || exit 1; done
fi
exit 0
