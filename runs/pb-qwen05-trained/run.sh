#!/usr/bin/env bash
# Issue 13's "after" row: the trained model on 40 ProcessBench GSM8K samples. Resumable (the store keeps
# finished samples). Code: src/ at pb-qwen05-base's code.commit (the same code as the before row).
set -euo pipefail
cd "$(dirname "$0")"
RUN=$PWD
. ../code-at-commit.sh ../pb-qwen05-base/code.commit
export PYTHONPATH=$RUN/code/src
MODEL=${MODEL:-$(cd ../train-qwen05 && pwd)/model.gguf}
# the store's samples came from the model whose sha256 is in model.sha256; a retrained model (the GGUF is
# not kept in git, and training on another CPU differs in the last bits) starts the evaluation afresh
sha=$(sha256sum "$MODEL" | cut -d' ' -f1)
if [ -f store.sqlite ] && [ "$sha" != "$(cat model.sha256 2>/dev/null)" ]; then
  echo "== $(date -u +%FT%TZ) another model ($sha): the old store moves to store.sqlite.old-model"
  mv store.sqlite store.sqlite.old-model; rm -f processbench.json
fi
echo "$sha" > model.sha256
echo "== $(date -u +%FT%TZ) start"
python3 -m genprm.cli.main eval processbench --data ../../../shared/data/processbench --subsets gsm8k --limit 40 --n 1 \
  --max-step-tokens 1024 --threads 1 --parallel 4 --model "$MODEL" --run "$RUN"
echo "== $(date -u +%FT%TZ) done"
