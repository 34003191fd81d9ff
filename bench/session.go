package bench

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// session is the part of `ferry run --json`'s summary the bench reads.
type session struct {
	Job     string    `json:"job"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	Result  string    `json:"result"`
	Error   string    `json:"error"`
	VMs     []struct {
		VM           string `json:"vm"`
		RestorePoint string `json:"restore_point"`
		Result       string `json:"result"`
		Error        string `json:"error"`
		Disks        []struct {
			Index         int    `json:"index"`
			Mode          string `json:"mode"`
			Lane          string `json:"lane"`
			BytesRead     int64  `json:"bytes_read"`
			BytesSent     int64  `json:"bytes_sent"`
			BytesWritten  int64  `json:"bytes_written"`
			BlocksChanged int64  `json:"blocks_changed"`
			BlocksTotal   int64  `json:"blocks_total"`
			Duration      int64  `json:"duration_ns"`
			Error         string `json:"error"`
		} `json:"disks"`
	} `json:"vms"`
}

// parseSession reads the summary of a session that replicated one VM of
// one disk, and checks that it succeeded in mode want (any when "").
func parseSession(out []byte, want string) (*FerryRun, error) {
	var s session
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("ferry's --json summary: %w", err)
	}
	if s.Result != "success" {
		msg := s.Error
		for _, vm := range s.VMs {
			if vm.Error != "" {
				msg += "; " + vm.Error
			}
		}
		return nil, fmt.Errorf("ferry's session %s: %s", s.Result, strings.TrimPrefix(msg, "; "))
	}
	if len(s.VMs) != 1 || len(s.VMs[0].Disks) != 1 {
		return nil, fmt.Errorf("ferry's session: want 1 VM with 1 disk, got %d VMs", len(s.VMs))
	}
	vm, d := s.VMs[0], s.VMs[0].Disks[0]
	f := &FerryRun{
		Job: s.Job, Mode: d.Mode, Lane: d.Lane,
		BytesRead: d.BytesRead, BytesSent: d.BytesSent, BytesWritten: d.BytesWritten,
		BlocksChanged: d.BlocksChanged, BlocksTotal: d.BlocksTotal,
		Session: s.Ended.Sub(s.Started), Disk: time.Duration(d.Duration), RestorePoint: vm.RestorePoint,
	}
	if want != "" && d.Mode != want {
		return f, fmt.Errorf("ferry copied in mode %q, the scenario needs %q", d.Mode, want)
	}
	return f, nil
}

// rsyncStats is what the bench reads from rsync --stats.
type rsyncStats struct {
	Sent     int64 // "Total bytes sent"
	Literal  int64 // "Literal data"
	Matched  int64 // "Matched data"
	Files    int64 // "Number of regular files transferred"
	FileSize int64 // "Total file size"
}

// parseRsyncStats reads rsync's --stats output; numbers may carry thousands
// separators.
func parseRsyncStats(out string) (rsyncStats, error) {
	var st rsyncStats
	fields := map[string]*int64{
		"Total bytes sent":                    &st.Sent,
		"Literal data":                        &st.Literal,
		"Matched data":                        &st.Matched,
		"Number of regular files transferred": &st.Files,
		"Total file size":                     &st.FileSize,
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		p, known := fields[strings.TrimSpace(key)]
		if !known {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(strings.NewReplacer(",", "", ".", "", "'", "").Replace(f[0]), 10, 64)
		if err != nil {
			return st, fmt.Errorf("rsync --stats: %q: %w", strings.TrimSpace(line), err)
		}
		*p = n
		seen[strings.TrimSpace(key)] = true
	}
	for _, k := range []string{"Total bytes sent", "Literal data"} {
		if !seen[k] {
			return st, fmt.Errorf("rsync --stats: no %q line", k)
		}
	}
	return st, nil
}
