#!/usr/bin/env bash
# gst-mmaudio batch job on Slurm: a job array whose tasks each take one shard of a JSON
# Lines manifest (`mmaudio generate --manifest`). mmaudio reads SLURM_ARRAY_TASK_ID,
# SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT (set by Slurm for every array task) as
# the shard index and count and deals the manifest's lines round-robin: task i takes
# lines i, i+N, i+2N, …
#
#   MANIFEST=/data/manifest.jsonl OUT_DIR=/data/out MMAUDIO_MODEL_DIR=/models \
#       sbatch deploy/slurm-array.sh          # or: sbatch --array=0-15 deploy/slurm-array.sh
#   cat /data/out/mmaudio-summary.shard-*.json
#
# Resumable: a finished output is skipped and work in progress goes to NAME.partial,
# renamed when complete, so a requeued or re-submitted task redoes only the file it was
# on. `--signal=B:TERM@120` makes Slurm send SIGTERM two minutes before the time limit:
# mmaudio then stops at once, keeps every finished file and writes its summary
# (mmaudio-summary.shard-I-of-N.json in OUT_DIR). A task exits 1 if a file failed.
#SBATCH --job-name=mmaudio
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --output=mmaudio-%A_%a.log
set -euo pipefail

: "${MANIFEST:?set MANIFEST to the JSON Lines manifest (one {\"input\": …} per line)}"
: "${OUT_DIR:?set OUT_DIR to the folder for the outputs}"
: "${MMAUDIO_MODEL_DIR:?set MMAUDIO_MODEL_DIR to the model folder (mmaudio fetch-weights)}"
MMAUDIO=${MMAUDIO:-mmaudio}

# exec: mmaudio itself receives Slurm's SIGTERM. MMAUDIO_ARGS: more options, split on
# spaces (e.g. "--num-steps 12 --original-audio mix").
# shellcheck disable=SC2086
exec "$MMAUDIO" generate --manifest "$MANIFEST" --output-dir "$OUT_DIR" \
    --variant "${MMAUDIO_VARIANT:-large_44k_v2}" --device "${MMAUDIO_DEVICE:-auto}" \
    --no-progress ${MMAUDIO_ARGS:-}
