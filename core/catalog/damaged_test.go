package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
)

// damagedCatalog is a real catalog with a few of the crash test's records
// (sessions with VMs and disks over many pages, replicas, restore points,
// job state), as bytes.
func damagedCatalog(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(path, Options{Clock: func() time.Time { return crashClock }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		s, r, p, j := crashRecords(i)
		s.Error = s.Error[:200*(i+1)] // records of several sizes: leaves, branches, overflow pages
		if err := c.Update(func(tx *Tx) error { return putRecords(tx, s, r, p, j) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// useDamaged opens the catalog at path and reads everything in it, then
// writes to it, and returns the first error.
func useDamaged(path string) error {
	c, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	sessions, err := c.Sessions("", 0)
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if _, err := c.Session(s.ID); err != nil {
			return err
		}
	}
	if _, err := c.Replicas(""); err != nil {
		return err
	}
	if _, err := c.RestorePoints("", ""); err != nil {
		return err
	}
	if _, err := c.JobState(crashJob); err != nil {
		return err
	}
	if _, err := c.MarkAbandoned(); err != nil {
		return err
	}
	_, err = c.BeginSession("after")
	return err
}

// checkDamagedError fails the test unless err is nil or the damaged
// catalog error for path, saying what to do.
func checkDamagedError(t *testing.T, path string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !errors.Is(err, ErrDamaged) || !errors.Is(err, errdefs.ErrDataLoss) {
		t.Fatalf("error %q does not match ErrDamaged and ErrDataLoss", err)
	}
	for _, want := range []string{path + " is damaged", "move it aside", "restore points on the targets are intact"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
}

// flip writes raw to path with n bits flipped at places drawn from seed:
// in the pages that hold something (not the zeros of free space), half of
// them in the first 64 bytes of a page, where its header and the index of
// its elements (page ids, offsets, counts) are.
func flip(t *testing.T, raw []byte, path string, seed uint64, n int) string {
	t.Helper()
	const pageSize = 4096
	var used []int
	for p := 0; p+pageSize <= len(raw); p += pageSize {
		if !bytes.Equal(raw[p:p+pageSize], make([]byte, pageSize)) {
			used = append(used, p)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	b := append([]byte(nil), raw...)
	var where []string
	for range n {
		off := used[rng.IntN(len(used))]
		if rng.IntN(2) == 0 {
			off += rng.IntN(64)
		} else {
			off += rng.IntN(pageSize)
		}
		bit := rng.IntN(8)
		b[off] ^= 1 << bit
		where = append(where, fmt.Sprintf("byte %d bit %d", off, bit))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.Join(where, ", ")
}

// TestDamagedCatalogNeverCrashes flips bits of a real catalog at many
// places: every use of it either works or fails with the damaged catalog
// error, never crashes the process. The flips are the same at every run,
// the file they hit is not quite: bbolt lays out its pages in map order.
// Without the guard on reads every run dies, of a panic in bbolt ("page 11
// already freed") or, now and then, of a SIGSEGV (a flipped page id, as in
// TestDamagedPageID); and before indexes were checked, a flipped session
// id in an index was "session not found", not damage.
func TestDamagedCatalogNeverCrashes(t *testing.T) {
	raw := damagedCatalog(t)
	dir := t.TempDir()
	const cases = 120
	failed := 0
	for seed := range uint64(cases) {
		path := filepath.Join(dir, fmt.Sprintf("catalog-%d.db", seed))
		where := flip(t, raw, path, seed, 1+int(seed%3))
		err := useDamaged(path)
		if err != nil {
			failed++
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if err != nil {
				t.Logf("%s: %v", where, err)
			}
			checkDamagedError(t, path, err)
		})
	}
	t.Logf("%d of %d damaged files refused, the others read", failed, cases)
}

// TestDamagedPageID plants a wrong page id as the root of the sessions
// bucket, the damage that crashed every command with a SIGSEGV inside bbolt
// (it reads its pages through a memory map): a page far beyond any address
// (a fault at a non-canonical address, reported as 0), one in unmapped
// memory, one just past the end of the file.
func TestDamagedPageID(t *testing.T) {
	raw := damagedCatalog(t)
	for _, tc := range []struct {
		name string
		page uint64
	}{
		{"non-canonical address", 1 << 50},
		{"unmapped address", 1 << 30},
		{"past the end of the file", uint64(len(raw)/4096) + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := append([]byte(nil), raw...)
			// The root bucket's leaf holds each bucket's name followed by
			// its header: root page id, then sequence (little endian).
			// The other names that end in "sessions" have a "_" before
			// it. Stale copies of the leaf in free pages get it too.
			name := []byte("sessions")
			planted := 0
			for i := 1; ; {
				j := bytes.Index(b[i:], name)
				if j < 0 {
					break
				}
				at := i + j
				root := at + len(name)
				if b[at-1] != '_' && root+8 <= len(b) {
					if id := binary.LittleEndian.Uint64(b[root:]); id > 1 && id < uint64(len(b)/4096) {
						binary.LittleEndian.PutUint64(b[root:], tc.page)
						planted++
					}
				}
				i = root
			}
			if planted == 0 {
				t.Fatal("found no header of the sessions bucket")
			}
			path := filepath.Join(t.TempDir(), "catalog.db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			err := useDamaged(path)
			if err == nil {
				t.Fatal("a catalog with a wrong page id was read")
			}
			checkDamagedError(t, path, err)
			// The process goes on: a good catalog beside it still works.
			c, _ := openTest(t)
			if _, err := c.Sessions("", 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDamagedIndex: an index naming a session the catalog does not have is
// damage, not a session that was never there.
func TestDamagedIndex(t *testing.T) {
	c, _ := openTest(t)
	s, err := c.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.rawUpdate(func(tx *bolt.Tx) error { return tx.Bucket(bucketSessions).Delete([]byte(s.ID)) }); err != nil {
		t.Fatal(err)
	}
	_, err = c.Sessions("web", 0)
	checkDamagedError(t, c.Path(), err)
	if err == nil || !strings.Contains(err.Error(), "index names session") {
		t.Fatalf("listing sessions: %v, want the damaged index", err)
	}
	// MarkAbandoned of another value (this one owns the session and does
	// not look at it) reads the running index.
	other, err := Open(c.Path(), Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = other.MarkAbandoned()
	checkDamagedError(t, c.Path(), err)
	if err == nil || !strings.Contains(err.Error(), "index names session") {
		t.Fatalf("MarkAbandoned: %v, want the damaged index", err)
	}
}
