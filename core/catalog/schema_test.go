package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
)

// countingMigration returns a migration that counts its runs and leaves a
// mark in the meta bucket.
func countingMigration(name string, runs *int) migration {
	return migration{name: name, apply: func(tx *bolt.Tx) error {
		*runs++
		return tx.Bucket(bucketMeta).Put([]byte("mark-"+name), []byte("x"))
	}}
}

// failingMigration writes a mark, then fails: the mark must not survive.
func failingMigration(name string) migration {
	return migration{name: name, apply: func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put([]byte("mark-"+name), []byte("x")); err != nil {
			return err
		}
		return errors.New("disk on fire")
	}}
}

func openWith(t *testing.T, path string, list []migration) (*Catalog, error) {
	t.Helper()
	return open(path, Options{Timeout: time.Second}, openConfig{migrations: list})
}

func hasMark(t *testing.T, c *Catalog, name string) bool {
	t.Helper()
	var found bool
	if err := c.rawView(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketMeta).Get([]byte("mark-"+name)) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

func TestMigrationsRunExactlyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")

	// A catalog of the first release, with a record in it.
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PutJobState(&JobState{Job: "web", Fingerprint: "f1"}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	var runs2, runs3 int
	list := append(append([]migration(nil), migrations...),
		countingMigration("two", &runs2), countingMigration("three", &runs3))
	for open := 1; open <= 3; open++ {
		c, err := openWith(t, path, list)
		if err != nil {
			t.Fatalf("open %d: %v", open, err)
		}
		if v := schemaVersion(t, c); v != len(migrations)+2 {
			t.Fatalf("open %d: schema version %d, want %d", open, v, len(migrations)+2)
		}
		js, err := c.JobState("web")
		if err != nil || js.Fingerprint != "f1" {
			t.Fatalf("open %d: record of version 1 lost: %v %v", open, js, err)
		}
		c.Close()
	}
	if runs2 != 1 || runs3 != 1 {
		t.Fatalf("migrations ran %d and %d times, want once each", runs2, runs3)
	}
}

func TestFailedMigrationKeepsPreviousVersion(t *testing.T) {
	for _, tc := range []struct {
		name     string
		list     func(runs *int) []migration
		wantErr  string // in the error
		wantAt   int    // the version left behind
		marks    []string
		notMarks []string
	}{
		{
			name: "first new migration fails",
			list: func(*int) []migration {
				return append(append([]migration(nil), migrations...), failingMigration("two"))
			},
			wantErr:  fmt.Sprintf("migrate to schema version %d (two): disk on fire", len(migrations)+1),
			wantAt:   len(migrations),
			notMarks: []string{"two"},
		},
		{
			name: "the one after a good one fails",
			list: func(runs *int) []migration {
				return append(append([]migration(nil), migrations...), countingMigration("two", runs), failingMigration("three"))
			},
			wantErr:  fmt.Sprintf("migrate to schema version %d (three): disk on fire", len(migrations)+2),
			wantAt:   len(migrations) + 1,
			marks:    []string{"two"},
			notMarks: []string{"three"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "catalog.db")
			var runs int
			list := tc.list(&runs)
			c, err := openWith(t, path, list)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded through a failing migration")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name %s and say %q", err, path, tc.wantErr)
			}
			// The file is left at the last good version, with nothing of
			// the failed migration, and this build's schema opens it.
			good := list[:tc.wantAt]
			c, err = openWith(t, path, good)
			if err != nil {
				t.Fatalf("reopen at version %d: %v", tc.wantAt, err)
			}
			defer c.Close()
			if v := schemaVersion(t, c); v != tc.wantAt {
				t.Fatalf("schema version %d after the failure, want %d", v, tc.wantAt)
			}
			for _, m := range tc.marks {
				if !hasMark(t, c, m) {
					t.Fatalf("work of migration %q lost", m)
				}
			}
			for _, m := range tc.notMarks {
				if hasMark(t, c, m) {
					t.Fatalf("half of failed migration %q kept", m)
				}
			}
			if runs > 1 {
				t.Fatalf("a good migration ran %d times", runs)
			}
		})
	}
}

func TestNewerCatalogRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PutJobState(&JobState{Job: "web"}); err != nil {
		t.Fatal(err)
	}
	setRawVersion(t, c, "7")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		flags []int
	)
	record := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		mu.Lock()
		flags = append(flags, flag)
		mu.Unlock()
		return os.OpenFile(name, flag, perm)
	}
	c, err = open(path, Options{Timeout: time.Second}, openConfig{migrations: migrations, openFile: record})
	if err == nil {
		c.Close()
		t.Fatal("a catalog from a newer ferry was opened")
	}
	msg := err.Error()
	for _, want := range []string{path, "schema version 7", fmt.Sprintf("versions up to %d", len(migrations)), "newer ferry"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not say %q", msg, want)
		}
	}
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("error %q does not match ErrFailedPrecondition", err)
	}
	if len(flags) == 0 {
		t.Fatal("the file opener hook was not used")
	}
	for _, f := range flags {
		if f&(os.O_RDWR|os.O_WRONLY) != 0 {
			t.Fatalf("the newer catalog was opened for writing (flags %#x)", f)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the newer catalog was changed")
	}
}
