package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
)

// Tx is one catalog transaction, handed to the function given to
// Catalog.Update (read-write) or Catalog.View (read-only). It has the read
// and write methods of Catalog; its writes become visible, all together,
// when the transaction commits. A Tx is valid only inside that function and
// on its goroutine.
type Tx struct {
	tx *bolt.Tx
	c  *Catalog
	// begun are the sessions this transaction wrote as running, with the
	// locks of their jobs when it began them; ended are those it saved
	// with a result. The Catalog takes them over when the transaction
	// commits.
	begun map[string]*jobLock
	ended []string
	done  bool
}

// running notes that the transaction wrote session id as running; l is the
// lock of its job when the transaction took it.
func (t *Tx) running(id string, l *jobLock) {
	if t.begun == nil {
		t.begun = make(map[string]*jobLock)
	}
	if old := t.begun[id]; old == nil {
		t.begun[id] = l
	}
}

// committed hands the sessions begun and ended to the Catalog.
func (t *Tx) committed() {
	t.done = true
	for id, l := range t.begun {
		t.c.setLive(id, l)
	}
	for _, id := range t.ended {
		t.c.clearLive(id)
	}
}

// rolledBack releases the locks the transaction took.
func (t *Tx) rolledBack() {
	if t.done {
		return
	}
	t.done = true
	for _, l := range t.begun {
		l.release()
	}
}

// sep separates the parts of composite keys. Names are checked to be free
// of it, so "job" NUL is a prefix of exactly that job's keys and keys sort
// by their parts in order.
const sep = "\x00"

// timeKey is the sortable, fixed-width form of times in keys.
const timeKey = "20060102T150405.000000000Z"

func key(parts ...string) []byte { return []byte(strings.Join(parts, sep)) }

// prefix is the common start of every key whose first parts are parts.
func prefix(parts ...string) []byte { return []byte(strings.Join(parts, sep) + sep) }

func formatTime(t time.Time) string { return t.UTC().Format(timeKey) }

// checkName refuses names that cannot be keys: empty, or holding the key
// separator.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s: %w", what, errdefs.ErrInvalidArgument)
	}
	if strings.Contains(s, sep) {
		return fmt.Errorf("%s %q contains a NUL byte: %w", what, s, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkTime refuses times that do not fit the fixed-width key form.
func checkTime(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%s is not set: %w", what, errdefs.ErrInvalidArgument)
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%s %s is out of range: %w", what, t, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkNames checks name pairs: what, value, what, value...
func checkNames(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := checkName(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

func getJSON(b *bolt.Bucket, k []byte, v any) (bool, error) {
	raw := b.Get(k)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, corrupt("record %q is not JSON: %v", k, err)
	}
	return true, nil
}

// keysWithPrefix lists the keys of b that start with p, in order. It
// copies them, so the caller may delete them afterwards.
func keysWithPrefix(b *bolt.Bucket, p []byte) [][]byte {
	var keys [][]byte
	cur := b.Cursor()
	for k, _ := cur.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = cur.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}
