# Sourced by each run.sh as `. ../code-at-commit.sh FILE`: make code/src the src/ of the commit named in
# FILE (the run's own code.commit, where missing HEAD at the first start; or another run's, which must
# exist), and record that commit in code.commit. code/ is not kept in git, so a fresh machine rebuilds it
# with git archive and the run resumes on the code it began with.
commit_file=$1
if [ ! -d code/src ]; then
  if [ -f "$commit_file" ]; then c=$(cat "$commit_file")
  elif [ "$commit_file" = code.commit ]; then c=$(git -C ../.. rev-parse HEAD)
  else echo "code-at-commit: no $commit_file" >&2; exit 1
  fi
  mkdir -p code
  git -C ../.. archive "$c" src | tar -x -C code
  echo "$c" > code.commit
fi
