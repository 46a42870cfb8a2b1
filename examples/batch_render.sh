#!/usr/bin/env bash
# Render a prompt list to transparent WebM clips, with a JSON manifest beside each clip
# (clip.webm.json: every parameter, the seed, model sources, versions, device and timings).
# Re-running skips finished clips, so an interrupted or partly failed run picks up where it stopped.
#
# Usage: examples/batch_render.sh [OUTDIR] [more `layeranim generate` options...]
#   OUTDIR  where the clips go (default: renders)
#   e.g.    examples/batch_render.sh renders --seed 7 --shard 1/2
#
# Environment:
#   PROMPTS    the prompt list (default: prompts.txt beside this script)
#   PRESET     the model preset (default: tiny — random weights: noise pictures, seconds a clip, no download)
#   LAYERANIM  how to run layeranim (default: layeranim; e.g. "python -m layeranim")
#
# stdout: one JSON line per item as it finishes, also kept in OUTDIR/results.jsonl
# (OUTDIR/results-shard-I-of-N.jsonl with --shard I/N, so shards can share OUTDIR).
# Exit code: layeranim's own — 0 all clips rendered or skipped, 1 some item failed, 2 a usage error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="${1:-renders}"
if [ "$#" -gt 0 ]; then shift; fi
prompts="${PROMPTS:-$here/prompts.txt}"
preset="${PRESET:-tiny}"
read -r -a layeranim <<<"${LAYERANIM:-layeranim}"

# One results file per shard, so shards writing into one OUTDIR do not clobber each other's results.
results_name="results.jsonl"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --shard=*) results_name="results-shard-${args[i]#--shard=}.jsonl" ;;
    --shard) results_name="results-shard-${args[i + 1]:-}.jsonl" ;;
  esac
done
results="$outdir/${results_name//\//-of-}"

mkdir -p "$outdir"
status=0
"${layeranim[@]}" generate --prompts "$prompts" --preset "$preset" -o "$outdir/" --json "$@" \
  | tee "$results" || status=$?

count() { grep -c "\"status\": *\"$1\"" "$results" || true; }
echo "batch_render: $(count ok) rendered, $(count skipped) skipped, $(count failed) failed" \
  "(exit $status); clips and manifests in $outdir/, results in $results" >&2
exit "$status"
