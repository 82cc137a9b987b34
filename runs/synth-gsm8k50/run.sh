#!/usr/bin/env bash
# Issue 12's real synthesis run, resumable: re-run this script after a stop or kill and it computes only
# what is missing. It grows the run 10 problems at a time so the first problems go through every stage
# early (their conversations feed the training run). Code: src/ at the commit in code.commit (kept in git;
# taken from HEAD at the first start).
set -euo pipefail
cd "$(dirname "$0")"
RUN=$PWD
. ../code-at-commit.sh code.commit
export PYTHONPATH=$RUN/code/src
MODELS=${GENPRM_MODELS:-$HOME/.cache/genprm/models}
for limit in ${LIMITS:-6 12 20 30 40 50}; do
  echo "== $(date -u +%FT%TZ) limit $limit"
  python3 -m genprm.cli.main synth run --problems ../../../shared/data/gsm8k/train.jsonl --limit "$limit" \
    --policy-model "$MODELS/qwen2.5-coder-0.5b-instruct.gguf" --teacher-model "$MODELS/qwen2.5-coder-1.5b-instruct.gguf" \
    --num-paths 4 --first-draws 8 --draws-per-try 8 --num-try 2 --k 4,8,16 \
    --policy-max-tokens 400 --completer-max-tokens 320 --teacher-max-tokens 1536 \
    --threads "${THREADS:-2}" --parallel 4 --run "$RUN" --out "$RUN/genprm-train.parquet"
  # the funnel when this pass first completes: a resumed run repeats earlier passes (their stages process
  # all stored work, later problems' too), so write it only while the store holds exactly $limit problems
  if [ ! -f "$RUN/stats-limit$limit.txt" ]; then
    stats=$(python3 -m genprm.cli.main synth stats "$RUN" 2>&1 || true)
    if grep -Eq "^\| problems \| read \| $limit \|" <<<"$stats"; then printf '%s\n' "$stats" > "$RUN/stats-limit$limit.txt"; fi
  fi
done
echo "== $(date -u +%FT%TZ) done"
