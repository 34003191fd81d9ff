package catalog

import (
	"fmt"
	"path/filepath"
	"testing"
)

// The cost of a transaction, which opens and closes the file: a read (a
// shared lock, a memory map, the meta pages) and a write (the same with
// the freelist, and two fsyncs). The engine writes a few times per VM and
// the progress of a session once a second.

func benchCatalog(b *testing.B) *Catalog {
	b.Helper()
	c, err := Open(filepath.Join(b.TempDir(), "catalog.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	for i := range 100 {
		if err := c.PutJobState(&JobState{Job: fmt.Sprintf("job-%03d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

func BenchmarkRead(b *testing.B) {
	c := benchCatalog(b)
	for b.Loop() {
		if _, err := c.JobState("job-042"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	c := benchCatalog(b)
	for b.Loop() {
		if err := c.PutJobState(&JobState{Job: "job-042"}); err != nil {
			b.Fatal(err)
		}
	}
}
