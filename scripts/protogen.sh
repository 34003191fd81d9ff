#!/usr/bin/env bash
# Generates the Go code of the plugin protocol into the proto folder given
# (sdk/proto for the real thing, a scratch copy for gen-check).
set -euo pipefail
root=${1:?usage: protogen.sh PROTO_DIR}
PATH="$(go env GOPATH)/bin:$PATH"
for f in $(cd "$root" && find . -name '*.proto' | sort); do
  protoc -I "$root" \
    --go_out="$root" --go_opt=paths=source_relative \
    --go-grpc_out="$root" --go-grpc_opt=paths=source_relative \
    "$root/${f#./}"
done
