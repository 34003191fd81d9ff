package cliflags

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		disk string
	}{
		{[]string{"site", "web-01", "--disk", "64MiB"}, []string{"site", "web-01"}, "64MiB"},
		{[]string{"--disk", "1GiB", "site", "web-01"}, []string{"site", "web-01"}, "1GiB"},
		{[]string{"site", "--disk", "2GiB", "web-01"}, []string{"site", "web-01"}, "2GiB"},
		{[]string{"site", "--", "--disk", "x"}, []string{"site", "--disk", "x"}, ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		disk := fs.String("disk", "", "")
		pos, err := ParseInterleaved(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || *disk != tc.disk {
			t.Errorf("ParseInterleaved(%q) = %q, disk %q, %v; want %q, disk %q", tc.args, pos, *disk, err, tc.pos, tc.disk)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := ParseInterleaved(fs, []string{"a", "--nope"}); err == nil {
		t.Error("an unknown flag was accepted")
	}
}
