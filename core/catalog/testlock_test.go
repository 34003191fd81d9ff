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

// TestOneTestOfAVMAtATime: the tests of one VM alone lock the VM as a
// plan's tests lock the plan; other VMs, the same VM name in another job,
// and a plan holding the VM are free.
func TestOneTestOfAVMAtATime(t *testing.T) {
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
	release, err := a.LockTestVM("web", "/DC0/vm/web-01", TestHolder{What: "ferry failover web /DC0/vm/web-01 --test", PID: 77, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.LockTestVM("web", "/DC0/vm/web-01", TestHolder{What: "ferry server", PID: 812})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `test failover of job "web" vm "/DC0/vm/web-01": another test of the VM runs, by ferry failover web /DC0/vm/web-01 --test (process 77, since 2026-12-06T03:00:00Z)`) {
		t.Fatalf("a second test of the VM: %v", err)
	}
	for _, free := range []func() (func(), error){
		func() (func(), error) { return b.LockTestVM("web", "db-01", TestHolder{PID: 9}) },
		func() (func(), error) { return b.LockTestVM("shop", "/DC0/vm/web-01", TestHolder{PID: 9}) },
		func() (func(), error) { return b.LockTest("web", TestHolder{PID: 9}) },
	} {
		other, err := free()
		if err != nil {
			t.Fatalf("another lock: %v", err)
		}
		other()
	}
	release()
	again, err := b.LockTestVM("web", "/DC0/vm/web-01", TestHolder{PID: 9})
	if err != nil {
		t.Fatalf("a test once the first ended: %v", err)
	}
	again()
}
