package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

// TestVersionJSON: 'ferry version --json' has the fields docs/cli.md
// documents, and no others.
func TestVersionJSON(t *testing.T) {
	t.Parallel()
	code, out, errb := ferryRun("version", "--json")
	var v versionInfo
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil || code != exitOK || errb != "" {
		t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, out, errb)
	}
	want := versionInfo{Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		PluginProtocol: fmt.Sprintf("%d.%d", sdk.ProtocolMajor, sdk.ProtocolMinor)}
	if v != want {
		t.Fatalf("ferry version --json: %+v, want %+v", v, want)
	}
}
