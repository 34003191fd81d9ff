package catalog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultTimeout is how long Open waits for another process to release the
// catalog when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// DefaultPath is where a configuration's catalog lives:
// <configDir>/.ferry/catalog.db.
func DefaultPath(configDir string) string {
	return filepath.Join(configDir, ".ferry", "catalog.db")
}

// Options tune Open. The zero value is ready to use.
type Options struct {
	// Clock gives the time the catalog stamps on records (session start and
	// end, replica and job state updates). time.Now when nil.
	Clock func() time.Time
	// Timeout bounds the wait for the file lock held by another process
	// (bbolt polls it every 50ms). DefaultTimeout when zero; it must not be
	// negative.
	Timeout time.Duration
	// Rand is the source of the random part of session ids. crypto/rand
	// when nil. It is only read inside write transactions, which never run
	// at the same time, so it need not be safe for concurrent use.
	Rand io.Reader
}

// Catalog is an open catalog file. It is safe for concurrent use by many
// goroutines: reads run in parallel, writes are serialized.
type Catalog struct {
	db    *bolt.DB
	path  string
	clock func() time.Time
	rand  io.Reader

	mu sync.Mutex
	// live holds the sessions this Catalog value wrote as "running":
	// MarkAbandoned leaves them alone, since their process is this one.
	live map[string]struct{}
}

// openConfig holds what tests replace: the migration list and the file
// opener bbolt uses.
type openConfig struct {
	migrations []migration
	openFile   func(name string, flag int, perm os.FileMode) (*os.File, error)
}

// Open opens the catalog at path, creating its folder and the file when
// they do not exist, and brings its schema up to date.
//
// It waits at most opts.Timeout (DefaultTimeout when zero) for another
// process holding the catalog;
// then it fails with an error naming the file that matches
// errdefs.ErrUnavailable. A catalog written by a newer ferry is refused,
// without being opened for writing, with an error naming the file and both
// schema versions that matches errdefs.ErrFailedPrecondition. A failing
// migration leaves the file at the last version that succeeded.
func Open(path string, opts Options) (*Catalog, error) {
	return open(path, opts, openConfig{migrations: migrations})
}

func open(path string, opts Options, cfg openConfig) (*Catalog, error) {
	if path == "" {
		return nil, fmt.Errorf("open catalog: empty path: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("open catalog %s: negative lock timeout %s: %w", path, opts.Timeout, errdefs.ErrInvalidArgument)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	bopts := &bolt.Options{Timeout: timeout, OpenFile: cfg.openFile}

	// Look at the version through a read-only handle first, so a catalog
	// from a newer ferry is never opened for writing.
	if info, err := os.Stat(path); err == nil && info.Size() > 0 {
		if err := checkVersion(path, bopts, len(cfg.migrations)); err != nil {
			return nil, err
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}

	db, err := bolt.Open(path, 0o600, bopts)
	if err != nil {
		return nil, openError(path, timeout, err)
	}
	if err := migrate(db, cfg.migrations); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	c := &Catalog{
		db:    db,
		path:  path,
		clock: opts.Clock,
		rand:  opts.Rand,
		live:  make(map[string]struct{}),
	}
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	return c, nil
}

// checkVersion opens path read-only and refuses a schema newer than known.
func checkVersion(path string, bopts *bolt.Options, known int) error {
	ro := *bopts
	ro.ReadOnly = true
	db, err := bolt.Open(path, 0o600, &ro)
	if err != nil {
		return openError(path, ro.Timeout, err)
	}
	defer db.Close()
	var have int
	if err := db.View(func(tx *bolt.Tx) error {
		have, err = readVersion(tx)
		return err
	}); err != nil {
		return fmt.Errorf("open catalog %s: %w", path, err)
	}
	if have > known {
		return fmt.Errorf("open catalog %s: %w", path, newerSchemaError(have, known))
	}
	return nil
}

func openError(path string, timeout time.Duration, err error) error {
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("open catalog %s: in use by another process (is another ferry running?); gave up after %s: %w",
			path, timeout, errdefs.ErrUnavailable)
	}
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrChecksum) {
		return fmt.Errorf("open catalog %s: not a readable catalog file: %w", path, err)
	}
	return fmt.Errorf("open catalog %s: %w", path, err)
}

// Path is the file the catalog was opened from.
func (c *Catalog) Path() string { return c.path }

// Close waits for running transactions to finish and releases the file.
// Calling it again does nothing; other methods fail after it.
func (c *Catalog) Close() error {
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("close catalog %s: %w", c.path, err)
	}
	return nil
}

// Update runs fn in one write transaction: everything fn changes through tx
// is committed together when fn returns nil, and nothing is when it returns
// an error (returned as is) or panics. Write transactions run one at a
// time; Update waits for the one in progress. fn must not keep tx, use it
// from another goroutine, or call methods of c (that would deadlock).
func (c *Catalog) Update(fn func(tx *Tx) error) error {
	var fnErr error
	err := c.db.Update(func(btx *bolt.Tx) error {
		fnErr = fn(&Tx{tx: btx, c: c})
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("update catalog %s: %w", c.path, err)
	}
	return nil
}

// View runs fn in one read-only transaction: fn sees one consistent state
// of the catalog while writers go on. Write methods of tx fail. The rules
// of Update about tx apply.
func (c *Catalog) View(fn func(tx *Tx) error) error {
	var fnErr error
	err := c.db.View(func(btx *bolt.Tx) error {
		fnErr = fn(&Tx{tx: btx, c: c})
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("read catalog %s: %w", c.path, err)
	}
	return nil
}

func (c *Catalog) now() time.Time { return c.clock().UTC() }

func (c *Catalog) setLive(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[id] = struct{}{}
}

func (c *Catalog) clearLive(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, id)
}

func (c *Catalog) isLive(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live[id]
	return ok
}
