package config

import (
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in         string
		kind       SelectorKind
		value, err string // err: the summary of the error, "" when it parses
	}{
		{in: "web-01", kind: SelectVM, value: "web-01"},
		{in: "vm-123", kind: SelectVM, value: "vm-123"},
		{in: "/Prod/vm/web/web-01", kind: SelectVM, value: "/Prod/vm/web/web-01"},
		{in: "db:primary", kind: SelectVM, value: "db:primary"},
		{in: "10.1.0.5:22", kind: SelectVM, value: "10.1.0.5:22"},
		{in: "vm:folder:x", kind: SelectVM, value: "folder:x"},
		{in: "folder:/Prod/vm/web", kind: SelectFolder, value: "/Prod/vm/web"},
		{in: "folder:/Prod/vm/web/", kind: SelectFolder, value: "/Prod/vm/web"},
		{in: "folder:/", kind: SelectFolder, value: "/"},
		{in: "folder:/Prod/vm/my web", kind: SelectFolder, value: "/Prod/vm/my web"},
		{in: "tag:gold", kind: SelectTag, value: "gold"},
		{in: "tag:tier/gold", kind: SelectTag, value: "tier/gold"},
		{in: "tag:Tier 1/Gold Plus", kind: SelectTag, value: "Tier 1/Gold Plus"},
		{in: "", err: "Invalid VM name"},
		{in: "  ", err: "Invalid VM name"},
		{in: "vm: ", err: "Invalid VM selector"},
		{in: "folder:", err: "Invalid folder selector"},
		{in: "folder:web", err: "Invalid folder selector"},
		{in: "folder: /Prod", err: "Invalid folder selector"},
		{in: "folder:/a//b", err: "Invalid folder selector"},
		{in: "folder:/a/./b", err: "Invalid folder selector"},
		{in: "tag:", err: "Invalid tag selector"},
		{in: "tag:a/", err: "Invalid tag selector"},
		{in: "tag:/b", err: "Invalid tag selector"},
		{in: "tag:a /b", err: "Invalid tag selector"},
		{in: "TAG:gold", err: "Unknown selector kind"},
		{in: "VM:web-01", err: "Unknown selector kind"},
		{in: "folders:/Prod", err: "Unknown selector kind"},
		{in: "fldr:/Prod", err: "Unknown selector kind"},
		{in: "tga:gold", err: "Unknown selector kind"},      // letters swapped: one edit
		{in: "top:gold", kind: SelectVM, value: "top:gold"}, // two edits from tag: a name, not a typo
	} {
		t.Run(tc.in, func(t *testing.T) {
			s, err := ParseSelector(tc.in)
			if tc.err != "" {
				se, ok := err.(*SelectorError)
				if !ok || se.Summary != tc.err {
					t.Fatalf("ParseSelector(%q) = %+v, %v; want error %q", tc.in, s, err, tc.err)
				}
				return
			}
			if err != nil || s.Kind != tc.kind || s.Value != tc.value {
				t.Fatalf("ParseSelector(%q) = %+v, %v; want %s %q", tc.in, s, err, tc.kind, tc.value)
			}
		})
	}
}

func TestSelectorMatches(t *testing.T) {
	tags := []string{"backup/daily", "tier/gold", "untagged-style"}
	for _, tc := range []struct {
		sel    string
		folder string
		tags   []string
		want   bool
	}{
		{"folder:/Prod/vm/web", "/Prod/vm/web", nil, true},
		{"folder:/Prod/vm/web", "/Prod/vm/web/frontend", nil, true},
		{"folder:/Prod/vm/web", "/Prod/vm/webshop", nil, false},
		{"folder:/Prod/vm/web", "/Prod/vm", nil, false},
		{"folder:/Prod/vm/web", "", nil, false},
		{"folder:/", "/Prod/vm", nil, true},
		{"folder:/", "", nil, false},
		{"tag:tier/gold", "", tags, true},
		{"tag:gold", "", tags, true},
		{"tag:Gold", "", tags, false},
		{"tag:tier/silver", "", tags, false},
		{"tag:other/gold", "", tags, false},
		{"tag:daily", "", tags, true},
		{"tag:untagged-style", "", tags, true},
		{"tag:backup", "", tags, false},
		{"web-01", "/Prod/vm/web", tags, false},
	} {
		s, err := ParseSelector(tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Matches(tc.folder, tc.tags); got != tc.want {
			t.Errorf("%s matches folder %q tags %q: %t, want %t", tc.sel, tc.folder, tc.tags, got, tc.want)
		}
	}
}

// FuzzParseSelector: parsing never panics, and a selector that parses
// renders to text that parses back to it.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"web-01", "folder:/Prod/vm/web/", "tag:tier/gold", "tag:gold", "vm:tag:x", "db:primary", "fodler:/x", "folder:/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseSelector(text)
		if err != nil {
			if se, ok := err.(*SelectorError); !ok || se.Summary == "" || se.Detail == "" {
				t.Fatalf("ParseSelector(%q): malformed error %#v", text, err)
			}
			return
		}
		back, err := ParseSelector(s.String())
		if err != nil || back.Kind != s.Kind || back.Value != s.Value {
			t.Fatalf("ParseSelector(%q) = %+v renders as %q, which parses to %+v, %v", text, s, s.String(), back, err)
		}
		if s.Kind == SelectFolder && (!strings.HasPrefix(s.Value, "/") || (s.Value != "/" && strings.HasSuffix(s.Value, "/"))) {
			t.Fatalf("ParseSelector(%q): folder %q", text, s.Value)
		}
	})
}
