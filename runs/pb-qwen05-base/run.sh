#!/usr/bin/env bash
# Issue 13's "before" row: the base model on 40 ProcessBench GSM8K samples. Resumable (the store keeps
# finished samples). Code: src/ at the commit in code.commit (kept in git; taken from HEAD at the first
# start); pb-qwen05-trained uses the same one.
set -euo pipefail
cd "$(dirname "$0")"
RUN=$PWD
. ../code-at-commit.sh code.commit
export PYTHONPATH=$RUN/code/src
MODEL=${MODEL:-$HOME/.cache/genprm/models/qwen2.5-coder-0.5b-instruct.gguf}
echo "== $(date -u +%FT%TZ) start"
python3 -m genprm.cli.main eval processbench --data ../../../shared/data/processbench --subsets gsm8k --limit 40 --n 1 \
  --max-step-tokens 1024 --threads 1 --parallel 4 --model "$MODEL" --run "$RUN"
echo "== $(date -u +%FT%TZ) done"
