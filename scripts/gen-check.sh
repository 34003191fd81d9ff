#!/usr/bin/env bash
# Fails when the committed protocol code differs from what the .proto files
# generate (the plugin protocol in sdk/proto, the proxy protocol in
# core/proxy/proto).
set -euo pipefail
status=0
for dir in sdk/proto core/proxy/proto; do
  scratch=$(mktemp -d)
  cp -r "$dir" "$scratch/proto"
  find "$scratch/proto" -name '*.pb.go' -delete
  "$(dirname "$0")/protogen.sh" "$scratch/proto"
  if ! diff -r "$dir" "$scratch/proto" >/dev/null; then
    echo "generated protocol code in $dir is stale; run 'make generate' and commit:"
    diff -r "$dir" "$scratch/proto" | head -20
    status=1
  fi
  rm -rf "$scratch"
done
[ "$status" = 0 ] && echo "generated code is current"
exit "$status"
