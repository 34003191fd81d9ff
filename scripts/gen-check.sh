#!/usr/bin/env bash
# Fails when the committed protocol code differs from what the .proto files
# generate.
set -euo pipefail
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r sdk/proto "$scratch/proto"
find "$scratch/proto" -name '*.pb.go' -delete
"$(dirname "$0")/protogen.sh" "$scratch/proto"
if ! diff -r sdk/proto "$scratch/proto" >/dev/null; then
  echo "generated protocol code is stale; run 'make generate' and commit:"
  diff -r sdk/proto "$scratch/proto" | head -20
  exit 1
fi
echo "generated code is current"
