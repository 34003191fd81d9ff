package catalog

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestOneTestOfAPlanAtATime: a second Catalog of the same file (another
// process, as far as the lock goes) cannot test a plan under test, and is
// told who tests it; other plans and the plan once released are free.
func TestOneTestOfAPlanAtATime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	a, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	since := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	release, err := a.LockTest("shop", TestHolder{What: "ferry server", PID: 812, Host: "dr-01", Since: since})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.LockTest("shop", TestHolder{What: "ferry failover plan shop --test", PID: 9})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `test of failover plan "shop": another test of the plan runs, by ferry server (process 812 on dr-01, since 2026-12-06T03:00:00Z)`) {
		t.Fatalf("a second test of the plan: %v", err)
	}
	other, err := b.LockTest("crm", TestHolder{What: "x", PID: 9})
	if err != nil {
		t.Fatalf("a test of another plan: %v", err)
	}
	other()
	if _, err := a.BeginSession("shop"); err != nil {
		t.Fatalf("a job named as the plan: %v", err)
	}
	release()
	again, err := b.LockTest("shop", TestHolder{What: "ferry failover plan shop --test", PID: 9})
	if err != nil {
		t.Fatalf("a test once the first ended: %v", err)
	}
	again()
}
