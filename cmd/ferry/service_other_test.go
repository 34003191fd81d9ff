//go:build !windows

package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestServiceSubcommandsOutsideWindows: install-service and remove-service
// say they exist only on Windows and exit 2, whatever flags follow; the
// proxy's help still names them.
func TestServiceSubcommandsOutsideWindows(t *testing.T) {
	for _, args := range [][]string{
		{"proxy", "install-service", "--tls", "ca/issued/p-dr", "--site", "dr"},
		{"proxy", "install-service"},
		{"proxy", "remove-service"},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"-C", t.TempDir()}, args...), &out, &errb)
		if code != exitUsage || out.Len() != 0 || !strings.Contains(errb.String(), "ferry "+strings.Join(args[:2], " ")+": Windows services exist only on Windows") {
			t.Errorf("ferry %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help", "proxy"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "ferry proxy install-service --tls DIR") ||
		!strings.Contains(out.String(), "ferry proxy remove-service") {
		t.Fatalf("ferry help proxy: exit %d\n%s%s", code, out.String(), errb.String())
	}
}
