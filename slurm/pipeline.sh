#!/bin/bash
# Structures to an evaluated model on a Slurm cluster: submits slurm/generate.sbatch ->
# slurm/train.sbatch -> slurm/evaluate.sbatch, each waiting for the one before with
# --dependency=afterok:<id> and --kill-on-invalid-dep=yes (a failed step cancels the
# steps after it instead of leaving them PENDING for ever), and prints the job ids.
# Run it on a login node (it only submits):
#
#   bash slurm/pipeline.sh CONFIG.toml WORK_DIR SOURCE...
#
#   bash slurm/pipeline.sh jobs/train-bt1.toml /scratch/$USER/bt1 /data/icsd/cifs
#
# writes WORK_DIR/dataset (generate), WORK_DIR/run (train), WORK_DIR/evaluate (evaluate) and
# the jobs' logs WORK_DIR/logs/xtalhpc-<step>-<jobid>.out. Sizes and time limits are the
# #SBATCH headers of the three scripts (edit those for your site).
#
# Environment (optional), each a string split on blanks:
#   XTALHPC_VENV             a virtual environment the jobs activate (default: the xtalhpc on PATH)
#   XTALHPC_SBATCH           sbatch options for all three jobs (e.g. "--partition=debug --account=abc")
#   XTALHPC_GENERATE_SBATCH, XTALHPC_TRAIN_SBATCH, XTALHPC_EVALUATE_SBATCH
#                            sbatch options for one step (e.g. XTALHPC_GENERATE_SBATCH="--ntasks=64")
#   XTALHPC_GENERATE_ARGS, XTALHPC_TRAIN_ARGS, XTALHPC_EVALUATE_ARGS
#                            extra options of xtalhpc generate/train/evaluate
#                            (e.g. XTALHPC_GENERATE_ARGS="--shard-size 256 --synthetic 100000")
#
# Exit status: 0 all three submitted (the ids are printed: `sacct -j ID1,ID2,ID3` follows them),
# 1 sbatch or xtalhpc missing or a submission refused (the jobs already submitted are then
# cancelled), 2 a bad argument or a missing path
# (docs/exit-status.md).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $# -lt 3 ]]; then
    echo "usage: bash $0 CONFIG.toml WORK_DIR SOURCE...   (sbatch/xtalhpc options: see the head of $0)" >&2
    exit 2
fi
config=$1 work=$2
shift 2
sources=("$@")

if [[ -n ${XTALHPC_VENV:-} ]]; then
    [[ -f $XTALHPC_VENV/bin/activate ]] || { echo "XTALHPC_VENV=$XTALHPC_VENV is not a virtual environment (no bin/activate)" >&2; exit 1; }
    # shellcheck disable=SC1091
    source "$XTALHPC_VENV/bin/activate"
fi
command -v sbatch >/dev/null || { echo "sbatch is not on PATH: run this on a Slurm login node" >&2; exit 1; }
command -v xtalhpc >/dev/null || { echo "xtalhpc is not on PATH (set XTALHPC_VENV)" >&2; exit 1; }
[[ -f $config ]] || { echo "training recipe $config does not exist" >&2; exit 2; }
for s in "${sources[@]}"; do
    # globs are expanded by xtalhpc generate itself; anything else must exist
    [[ $s == *[*?[]* || -e $s ]] || { echo "source $s does not exist" >&2; exit 2; }
done

# The jobs run in the submission folder: give them absolute paths.
abspath() { [[ $1 == /* ]] && echo "$1" || echo "$PWD/$1"; }
config=$(abspath "$config")
work=$(abspath "$work")
for i in "${!sources[@]}"; do sources[i]=$(abspath "${sources[i]}"); done
mkdir -p "$work/logs" || { echo "cannot create $work/logs" >&2; exit 2; }

read -r -a common <<< "${XTALHPC_SBATCH:-}"
read -r -a gen_sb <<< "${XTALHPC_GENERATE_SBATCH:-}"
read -r -a train_sb <<< "${XTALHPC_TRAIN_SBATCH:-}"
read -r -a eval_sb <<< "${XTALHPC_EVALUATE_SBATCH:-}"
read -r -a gen_args <<< "${XTALHPC_GENERATE_ARGS:-}"
read -r -a train_args <<< "${XTALHPC_TRAIN_ARGS:-}"
read -r -a eval_args <<< "${XTALHPC_EVALUATE_ARGS:-}"

submitted=()
submit() {  # submit STEP [sbatch options...] SCRIPT ARGS...: prints the job id
    local step=$1 out id
    shift
    if ! out=$(sbatch --parsable --output="$work/logs/xtalhpc-$step-%j.out" "$@"); then
        echo "sbatch refused the $step job (see its message above)" >&2
        if [[ ${#submitted[@]} -gt 0 ]]; then
            # no half pipelines: the steps already submitted would run for nothing
            scancel "${submitted[@]}" && echo "cancelled the jobs already submitted: ${submitted[*]}" >&2
        fi
        exit 1
    fi
    id=${out%%;*}
    echo "$id"
}

gen=$(submit generate "${common[@]}" "${gen_sb[@]}" "$here/generate.sbatch" "$work/dataset" "${sources[@]}" -- "${gen_args[@]}")
submitted+=("$gen")
echo "generate  job $gen: ${sources[*]} -> $work/dataset"
train=$(submit train --dependency="afterok:$gen" --kill-on-invalid-dep=yes "${common[@]}" "${train_sb[@]}" \
    "$here/train.sbatch" "$config" "$work/dataset" "$work/run" -- "${train_args[@]}")
submitted+=("$train")
echo "train     job $train: $(basename "$config") -> $work/run (after $gen)"
ev=$(submit evaluate --dependency="afterok:$train" --kill-on-invalid-dep=yes "${common[@]}" "${eval_sb[@]}" \
    "$here/evaluate.sbatch" "$work/run" "$work/dataset" "$work/evaluate" -- "${eval_args[@]}")
echo "evaluate  job $ev: $work/run on $work/dataset -> $work/evaluate (after $train)"
echo "jobs $gen $train $ev; logs in $work/logs; follow with: sacct -j $gen,$train,$ev -o JobID,JobName,State,ExitCode"
