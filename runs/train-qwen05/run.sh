#!/usr/bin/env bash
# Issue 13's training run: LoRA on Qwen2.5-Coder-0.5B-Instruct on the synthesis run's export as it is when
# this starts (copied to data.parquet, so the run's later exports don't change it), then the merged model
# as Q4_K_M GGUF. Resumable: genprm train continues from the last checkpoint. Code: src/ at code.commit.
set -euo pipefail
cd "$(dirname "$0")"
RUN=$PWD
. ../code-at-commit.sh code.commit
export PYTHONPATH=$RUN/code/src
[ -f data.parquet ] || cp ../synth-gsm8k50/genprm-train.parquet data.parquet
BASE=${BASE:-$HOME/.cache/genprm/hf/qwen2.5-coder-0.5b-instruct}
echo "== $(date -u +%FT%TZ) train"
python3 -m genprm.cli.main train --data data.parquet --base-model "$BASE" --out "$RUN/out" \
  --lora --epochs "${EPOCHS:-10}" --global-batch-size 4 --save-steps 5
echo "== $(date -u +%FT%TZ) export"
python3 -m genprm.cli.main export "$RUN/out" --gguf "$RUN/model.gguf" --gguf-type Q4_K_M
# what the README and docs/training.md cite, kept in git (out/ is not)
cp out/metrics.jsonl out/train_result.json out/export.json .
echo "== $(date -u +%FT%TZ) done"
