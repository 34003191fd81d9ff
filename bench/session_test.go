package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseSession(t *testing.T) {
	const ok = `{
  "id": "20261122T011922Z-cf20", "job": "plain",
  "started": "2026-11-22T01:19:22.700000000Z", "ended": "2026-11-22T01:19:23.200000000Z",
  "result": "success",
  "vms": [{"vm": "bench-01", "restore_point": "p2", "result": "success",
    "disks": [{"index": 0, "mode": "change-tracking", "lane": "direct", "bytes_read": 100, "bytes_sent": 80,
      "bytes_written": 100, "blocks_changed": 3, "blocks_total": 9, "size": 4096, "duration_ns": 400000000}]}],
  "totals": {"vms": 1}
}`
	for _, tc := range []struct {
		name, json, mode, err string
	}{
		{"success", ok, "change-tracking", ""},
		{"wrong mode", ok, "digest", `mode "change-tracking", the scenario needs "digest"`},
		{"failed", `{"result": "failed", "error": "job broke", "vms": [{"error": "vm broke"}]}`, "full", "job broke; vm broke"},
		{"two disks", `{"result": "success", "vms": [{"disks": [{}, {}]}]}`, "full", "want 1 VM with 1 disk"},
		{"not json", `ferry: oops`, "full", "summary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseSession([]byte(tc.json), tc.mode)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := FerryRun{Job: "plain", Mode: "change-tracking", Lane: "direct", BytesRead: 100, BytesSent: 80, BytesWritten: 100,
				BlocksChanged: 3, BlocksTotal: 9, Session: 500 * time.Millisecond, Disk: 400 * time.Millisecond, RestorePoint: "p2"}
			if f.Job != want.Job || f.Mode != want.Mode || f.Lane != want.Lane || f.BytesRead != want.BytesRead ||
				f.BytesSent != want.BytesSent || f.BytesWritten != want.BytesWritten || f.BlocksChanged != want.BlocksChanged ||
				f.BlocksTotal != want.BlocksTotal || f.Session != want.Session || f.Disk != want.Disk || f.RestorePoint != want.RestorePoint {
				t.Errorf("got %+v, want %+v", *f, want)
			}
		})
	}
}

func TestParseRsyncStats(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want rsyncStats
		err  bool
	}{
		{"3.x with separators", `
Number of files: 1 (reg: 1)
Number of regular files transferred: 1
Total file size: 3,000,000 bytes
Literal data: 1,728 bytes
Matched data: 2,998,272 bytes
Total bytes sent: 8,756
Total bytes received: 10,457

sent 8,756 bytes  received 10,457 bytes  38,426.00 bytes/sec
`, rsyncStats{Sent: 8756, Literal: 1728, Matched: 2998272, Files: 1, FileSize: 3000000}, false},
		{"plain numbers", "Number of regular files transferred: 0\nLiteral data: 0 bytes\nTotal bytes sent: 52\n",
			rsyncStats{Sent: 52}, false},
		{"no stats", "sending incremental file list\n", rsyncStats{}, true},
		{"garbage number", "Literal data: lots\nTotal bytes sent: 1\n", rsyncStats{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRsyncStats(tc.out)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
