#!/bin/bash
# xtalhpc study under Slurm: the driver runs in this small CPU job (dataset generation, the structure
# pools, the report) and submits each arm's training and evaluation as Slurm jobs of their own
# through submitit (`--cluster slurm`), waiting for each; a rerun skips the arms already done.
#
# Edit only the #SBATCH header (time for the whole study, and -- if your site needs them --
# partition/account lines, which this script deliberately does not set).
#
#   sbatch slurm/study.sh jobs/study /scratch/$USER/study [-- extra xtalhpc study options]
#   sbatch slurm/study.sh jobs/study /scratch/$USER/study -- --partition gpu --time 2:00:00 --report docs/study.md
#
# Environment (optional):
#   XTALHPC_VENV   a virtual environment to activate; default: whatever `xtalhpc` is on PATH.
#
# Outputs: STUDYDIR/arms/<arm>/{run,eval,done.json}, STUDYDIR/study.md; docs/study.md.
# Exit statuses: docs/exit-status.md (1: an arm failed, the others are recorded; 2: a bad recipe,
# refused before anything ran).
#
#SBATCH --job-name=xtalhpc-study
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=xtalhpc-study-%j.out

set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: sbatch $0 STUDY_FOLDER STUDYDIR [-- extra xtalhpc study options]" >&2
    exit 2
fi
study=$1 output=$2
shift 2
[[ ${1:-} == "--" ]] && shift
extra=("$@")

if [[ -n ${XTALHPC_VENV:-} ]]; then
    [[ -f $XTALHPC_VENV/bin/activate ]] || { echo "XTALHPC_VENV=$XTALHPC_VENV is not a virtual environment (no bin/activate)" >&2; exit 1; }
    # shellcheck disable=SC1091
    source "$XTALHPC_VENV/bin/activate"
fi
command -v xtalhpc >/dev/null || { echo "xtalhpc is not on PATH (set XTALHPC_VENV)" >&2; exit 1; }
[[ -d $study ]] || { echo "study folder $study does not exist (jobs/study)" >&2; exit 2; }

export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
echo "job ${SLURM_JOB_ID:-?}: xtalhpc study $study -> $output on ${SLURM_JOB_NODELIST:-?}"
xtalhpc study "$study" --output "$output" --cluster slurm "${extra[@]}"
