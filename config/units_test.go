package config

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"200Mbps", 25_000_000, ""},
		{"200 Mbps", 25_000_000, ""},
		{"1.5Gbps", 187_500_000, ""},
		{"8bps", 1, ""},
		{"12bps", 1, ""},
		{"100kbps", 12_500, ""},
		{"100Kbps", 12_500, ""},
		{"25MB/s", 25_000_000, ""},
		{"25mB/s", 25_000_000, ""},
		{"1KB/s", 1000, ""},
		{"1KiB/s", 1024, ""},
		{"1.5 MiB/s", 1_572_864, ""},
		{"2GiB/s", 2 << 30, ""},
		{"3GB/s", 3_000_000_000, ""},
		{"1B/s", 1, ""},
		{"0.5KiB/s", 512, ""},
		{" 10 Mbps ", 1_250_000, ""},
		{"200Mbs", 0, `unknown unit "Mbs"`},
		{"200MBps", 0, `unknown unit "MBps"`},
		{"200mb/s", 0, `unknown unit "mb/s"`},
		{"1Kibps", 0, "unknown unit"},
		{"1000", 0, "has no unit"},
		{"-5MB/s", 0, "is negative"},
		{"fast", 0, "does not start with a number"},
		{".Mbps", 0, "does not start with a number"},
		{"1.2.3Mbps", 0, "does not start with a number"},
		{"", 0, "does not start with a number"},
		{"0Mbps", 0, "less than 1 byte per second"},
		{"4bps", 0, "less than 1 byte per second"},
		{"99999999999GiB/s", 0, "too large"},
		{strings.Repeat("9", 41) + "bps", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseRate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseRate(%q) = %d, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"16KiB", 16 << 10, ""},
		{"16 KiB", 16 << 10, ""},
		{"16kib", 0, "unknown unit"},
		{"1MiB", 1 << 20, ""},
		{"0.5MiB", 512 << 10, ""},
		{"4096", 4096, ""},
		{"4096B", 4096, ""},
		{"16KB", 16_000, ""},
		{"16kB", 16_000, ""},
		{"2GiB", 2 << 30, ""},
		{"1.5B", 0, "not a whole number of bytes"},
		{"0.1KiB", 0, "not a whole number of bytes"},
		{"0", 0, "less than 1 byte"},
		{"16Kb", 0, "unknown unit"},
		{"lots", 0, "does not start with a number"},
		{"-1KiB", 0, "is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSize(%q) = %d, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{4096: "4KiB", 1 << 20: "1MiB", 1536: "1536B", 3 << 30: "3GiB", 0: "0B"} {
		if got := formatSize(in); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		given      string
		candidates []string
		want       string
	}{
		{"source.local.prd", []string{"source.local.prod", "source.vsphere.prod"}, "source.local.prod"},
		{"zstdd", []string{"none", "s2", "zstd", "auto"}, "zstd"},
		{"vmware", []string{"local", "vsphere"}, ""},
		{"", []string{"ab"}, "ab"},
		{"abc", nil, ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.given, tt.candidates); got != tt.want {
			t.Errorf("suggest(%q, %q) = %q, want %q", tt.given, tt.candidates, got, tt.want)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"200Mbps", "1.5 GiB/s", "4bps", "-5MB/s", "1.2.3", "0.125B/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseRate(s)
		if err == nil && n < 1 {
			t.Fatalf("parseRate(%q) = %d without an error", s, n)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"16KiB", "0.5MiB", "4096", "16KB", "1.5B", "9GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err == nil && n < 1 {
			t.Fatalf("parseSize(%q) = %d without an error", s, n)
		}
	})
}
