//go:build linux

package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the spawner, as ferry-bench does.
	ServeSpawn()
	os.Exit(m.Run())
}

func TestMeasure(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		m    measurer
	}{
		{"direct", measurer{}},
		{"through a spawner", measurer{spawner: os.Args[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, out, _, err := tc.m.run(ctx, []string{"sh", "-c", `sleep 0.2; echo "$GREETING"`}, []string{"GREETING=hello"})
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != "hello\n" {
				t.Errorf("stdout %q, want hello", out)
			}
			if u.Wall < 200*time.Millisecond || u.Wall > 5*time.Second {
				t.Errorf("wall %v, want about 0.2s", u.Wall)
			}
			if u.MaxRSS <= 0 {
				t.Errorf("no max RSS")
			}
			names := map[string]bool{}
			for _, p := range u.Procs {
				names[p.Name] = true
			}
			if !names["sleep"] || names[os.Args[0]] {
				t.Errorf("processes %v: want sleep and its shell, not the spawner", u.Procs)
			}

			_, _, _, err = tc.m.run(ctx, []string{"sh", "-c", "echo broken >&2; exit 3"}, nil)
			if err == nil || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "exit status 3") {
				t.Errorf("a failing command: %v, want an error with its status and standard error", err)
			}
			_, _, _, err = tc.m.run(ctx, []string{"sh", "-c", "kill -9 $$"}, nil)
			if err == nil {
				t.Errorf("a killed command: no error")
			}
		})
	}
}

// TestMeasureSpawnerFloor shows why tools start through a spawner: a child
// started directly reports at least its parent's peak resident set.
func TestMeasureSpawnerFloor(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 128 MiB")
	}
	ballast := make([]byte, 128<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}
	ctx := context.Background()
	direct, _, _, err := measurer{}.run(ctx, []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spawned, _, _, err := measurer{spawner: os.Args[0]}.run(ctx, []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if spawned.MaxRSS >= 64<<20 {
		t.Errorf("true through a spawner: max RSS %s, want a few MiB", FormatBytes(spawned.MaxRSS))
	}
	t.Logf("max RSS of true: %s started directly by a 128 MiB process, %s through a spawner",
		FormatBytes(direct.MaxRSS), FormatBytes(spawned.MaxRSS))
	ballast[len(ballast)-1] = 2
}
