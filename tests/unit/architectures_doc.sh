#!/bin/bash
# docs/architectures.md must be what the registry says: regenerate it with
#   ptm-inspect --architectures-markdown > docs/architectures.md
set -euo pipefail
inspect=$1 doc=$2
if ! diff -u "$doc" <("$inspect" --architectures-markdown); then
  echo "docs/architectures.md differs from the registry (above); regenerate it with:" >&2
  echo "  $inspect --architectures-markdown > docs/architectures.md" >&2
  exit 1
fi
echo "docs/architectures.md matches the registry ($(grep -c '^| [a-z]' "$doc") architectures)"
