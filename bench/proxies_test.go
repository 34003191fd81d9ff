//go:build linux

package bench

import (
	"testing"
	"time"
)

func TestParseProxyLine(t *testing.T) {
	for _, tc := range []struct {
		name, line, want string
		ok               bool
	}{
		{"ready", "proxy dr listening on 127.0.0.3:41113 (site \"dr\", 4 task slots, certificate valid until 2027-12-06)\n", "127.0.0.3:41113", true},
		{"ipv6", "proxy p listening on [::1]:7443 (site \"\", 1 task slots)", "[::1]:7443", true},
		{"nothing: it died first", "", "", false},
		{"another line", "ferry: proxy: open ca/issued/dr: no such file or directory", "", false},
		{"cut short", "proxy dr listening on", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProxyLine(tc.line)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("parseProxyLine(%q) = %q, %v; want %q, ok %v", tc.line, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	// utime 150, stime 50, cutime 30, cstime 20 ticks: 2.5 s. The command
	// name holds a space and a parenthesis.
	stat := "4242 (ferry (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 30 20 20 0 12 0 100 2000000 3000 18446744073709551615"
	if got, err := parseStatCPU(stat); err != nil || got != 2500*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 2.5s", got, err)
	}
	for _, bad := range []string{"", "4242 ferry S 1", "4242 (ferry) S 1 2 3", "4242 (ferry) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 50 30 20"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
	if cpu, err := procCPU(1); err != nil || cpu < 0 {
		t.Errorf("procCPU(1) = %v, %v", cpu, err)
	}
}
