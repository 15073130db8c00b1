#!/usr/bin/env bash
# The whole pipeline as Slurm jobs, each starting only when the one it reads succeeded (afterok):
#
#   train -> infer (array of N shards) -> umap -> visualize
#                                      -> index
#                                      -> anomaly
#
#   apptainer/pipeline.sh [--shards N] [--dir DIR] [--gpu] [-- HYRAX OPTIONS FOR EVERY STAGE]
#   apptainer/pipeline.sh --shards 16 -- -c "$PWD/my.toml"
#
# Run it on a login node. Every job runs in DIR (default hyrax-pipeline-<date>-<time>), so each stage
# reads the newest finished run of the stage before it from DIR/results; job logs go to DIR/logs. With
# --kill-on-invalid-dep=yes a failure cancels everything after it instead of leaving it pending.
# It prints the job ids, one "stage id" a line. --gpu asks one GPU for train and each infer task and
# runs the image with --nv. HYRAX_SIF, HYRAX_APPTAINER_FLAGS and HYRAX as in hyrax.sbatch;
# HYRAX_SBATCH_ARGS adds sbatch options to every job (e.g. "--account=abc --partition=cpu").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=4
dir=hyrax-pipeline-$(date +%Y%m%d-%H%M%S)
gpu=()
while [ $# -gt 0 ]; do
    case $1 in
        --shards) shards=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --gpu) gpu=(--gres=gpu:1); export HYRAX_APPTAINER_FLAGS="--nv ${HYRAX_APPTAINER_FLAGS:-}"; shift ;;
        --) shift; break ;;
        *) echo "usage: $0 [--shards N] [--dir DIR] [--gpu] [-- hyrax options]" >&2; exit 2 ;;
    esac
done
mkdir -p "$dir/logs"
dir=$(cd "$dir" && pwd)
# the image path must survive the jobs' own working directory
[ -n "${HYRAX_SIF:-}" ] && export HYRAX_SIF=$(realpath "$HYRAX_SIF")
[ -z "${HYRAX:-}${HYRAX_SIF:-}" ] && export HYRAX_SIF=$PWD/hyrax.sif

submit() {  # submit NAME [sbatch options] SCRIPT [args]: prints the job id
    local name=$1 out="%x-%j.out"; shift
    [[ " $* " == *" --array="* ]] && out="%x-%A_%a.out"
    # shellcheck disable=SC2086  # HYRAX_SBATCH_ARGS is a list of options
    sbatch --parsable --kill-on-invalid-dep=yes --chdir="$dir" --job-name="hyrax-$name" \
        --output="$dir/logs/$out" ${HYRAX_SBATCH_ARGS:-} "$@" | cut -d';' -f1
}

train=$(submit train "${gpu[@]}" "$here/hyrax.sbatch" train "$@")
infer=$(submit infer "${gpu[@]}" --dependency="afterok:$train" --array="0-$((shards - 1))" \
        "$here/infer-array.sbatch" "$@")
umap=$(submit umap --dependency="afterok:$infer" "$here/hyrax.sbatch" umap "$@")
visualize=$(submit visualize --dependency="afterok:$umap" "$here/hyrax.sbatch" visualize "$@")
index=$(submit index --dependency="afterok:$infer" "$here/hyrax.sbatch" index "$@")
anomaly=$(submit anomaly --dependency="afterok:$infer" "$here/hyrax.sbatch" anomaly "$@")

printf '%s %s\n' train "$train" infer "$infer" umap "$umap" visualize "$visualize" index "$index" \
    anomaly "$anomaly"
echo "pipeline in $dir (logs in $dir/logs; squeue --me to follow it)" >&2
