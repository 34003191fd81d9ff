package catalog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultTimeout is how long a transaction (and Open) waits for those of
// other processes to release the catalog when Options.Timeout is zero.
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
	// Timeout bounds each wait for the file lock held by another
	// process's transaction (bbolt polls it every 50ms). DefaultTimeout
	// when zero; it must not be negative.
	Timeout time.Duration
	// Rand is the source of the random part of session ids. crypto/rand
	// when nil. It is only read inside write transactions, which never run
	// at the same time, so it need not be safe for concurrent use.
	Rand io.Reader
}

// Catalog is an open catalog file. It is safe for concurrent use by many
// goroutines: reads run in parallel, writes are serialized.
//
// A Catalog does not keep the file open: each transaction opens it, with a
// shared lock to read or an exclusive one to write, and closes it when it
// ends. So no process holds the catalog between its transactions, and
// several ferry processes (a run, another job's run, `ferry status`) use
// one catalog at once, each waiting at most Options.Timeout for the others'
// transactions.
type Catalog struct {
	path    string
	clock   func() time.Time
	rand    io.Reader
	bopts   bolt.Options
	timeout time.Duration

	// txs orders this process's transactions as the file lock orders those
	// of processes: reads share, a write is alone. bbolt's lock belongs to
	// an open file, so without it two transactions of one process would
	// wait for each other through the file lock, 50ms poll by poll.
	txs sync.RWMutex

	mu     sync.Mutex
	closed bool
	// live holds the sessions this Catalog value wrote as "running", with
	// the lock of their job when they were begun here: MarkAbandoned
	// leaves them alone, since their process is this one.
	live map[string]*jobLock
	// control is the claim on the catalog's jobs of a ferry server, when
	// this Catalog holds it (ClaimControl).
	control *jobLock
}

// openConfig holds what tests replace: the migration list and the file
// opener bbolt uses.
type openConfig struct {
	migrations []migration
	openFile   func(name string, flag int, perm os.FileMode) (*os.File, error)
}

// Open opens the catalog at path, creating its folder and the file when
// they do not exist, and brings its schema up to date. It takes the
// file's exclusive lock only when it has something to write (a new file, a
// migration); a catalog that is up to date is only read.
//
// It waits at most opts.Timeout (DefaultTimeout when zero) for another
// process's transaction;
// then it fails with an error naming the file that matches
// errdefs.ErrUnavailable. A catalog written by a newer ferry is refused,
// without being opened for writing, with an error naming the file and both
// schema versions that matches errdefs.ErrFailedPrecondition. A file that
// cannot be read is refused with an error matching ErrDamaged that says
// what to do. A failing migration leaves the file at the last version that
// succeeded.
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
	c := &Catalog{
		path:    path,
		clock:   opts.Clock,
		rand:    opts.Rand,
		bopts:   bolt.Options{Timeout: timeout, OpenFile: cfg.openFile},
		timeout: timeout,
		live:    make(map[string]*jobLock),
	}
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}

	// Look at the version through a read-only open first, so a catalog
	// from a newer ferry is never opened for writing, and one that is up
	// to date is not locked against the other processes.
	known := len(cfg.migrations)
	if info, err := os.Stat(path); err == nil && info.Size() > 0 {
		current := false
		err := c.withDB(false, func(db *bolt.DB) error {
			return db.View(func(tx *bolt.Tx) error {
				have, err := readVersion(tx)
				if err != nil {
					return err
				}
				if have > known {
					return newerSchemaError(have, known)
				}
				if current = have == known; current {
					return checkBuckets(tx, known)
				}
				return nil
			})
		})
		if err != nil {
			return nil, openFailed(path, err)
		}
		if current {
			return c, nil
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}

	if err := c.withDB(true, func(db *bolt.DB) error { return migrate(db, cfg.migrations) }); err != nil {
		return nil, openFailed(path, err)
	}
	return c, nil
}

// openFailed names the file in an error of open, unless the error already
// does.
func openFailed(path string, err error) error {
	var d *damagedError
	if errors.As(err, &d) || errors.Is(err, errdefs.ErrUnavailable) {
		return err
	}
	if errors.Is(err, ErrDamaged) {
		return damaged(path, err)
	}
	return fmt.Errorf("open catalog %s: %w", path, err)
}

func openError(path string, timeout time.Duration, err error) error {
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("open catalog %s: in use by another process (is another ferry running?); gave up after %s: %w",
			path, timeout, errdefs.ErrUnavailable)
	}
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrChecksum) {
		return damaged(path, fmt.Errorf("not a readable catalog file: %w", err))
	}
	return fmt.Errorf("open catalog %s: %w", path, err)
}

// withDB opens the file (for writing when write is set, else read-only),
// runs fn and closes it, waiting first for this process's transactions
// that conflict. Faults and panics of bbolt on a damaged file come back as
// the damaged catalog error.
func (c *Catalog) withDB(write bool, fn func(db *bolt.DB) error) error {
	if write {
		c.txs.Lock()
		defer c.txs.Unlock()
	} else {
		c.txs.RLock()
		defer c.txs.RUnlock()
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("catalog %s: closed: %w", c.path, errdefs.ErrFailedPrecondition)
	}
	opts := c.bopts
	opts.ReadOnly = !write
	// The file bbolt opens, to close it should bbolt panic before it
	// returns the DB: a leaked file would keep its lock.
	var file *os.File
	openFile := opts.OpenFile
	if openFile == nil {
		openFile = os.OpenFile
	}
	opts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := openFile(name, flag, perm)
		file = f
		return f, err
	}
	opened := false
	err := guard(c.path, func() (err error) {
		db, err := bolt.Open(c.path, 0o600, &opts)
		if err != nil {
			return openError(c.path, c.timeout, err)
		}
		opened = true
		// Deferred, so that a panic of fn, or of bbolt on a damaged page,
		// still releases the file and its lock.
		defer func() {
			if cerr := db.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close catalog %s: %w", c.path, cerr)
			}
		}()
		return fn(db)
	})
	if !opened && file != nil && errors.Is(err, ErrDamaged) {
		_ = file.Close() // bbolt panicked inside Open, before it could
	}
	return err
}

// Path is the file the catalog was opened from.
func (c *Catalog) Path() string { return c.path }

// Close waits for running transactions to finish and releases the locks of
// the sessions it began (as a process that ends would). Calling it again
// does nothing; other methods fail after it.
func (c *Catalog) Close() error {
	c.txs.Lock()
	defer c.txs.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for id, l := range c.live {
		l.release()
		delete(c.live, id)
	}
	c.control.release()
	c.control = nil
	return nil
}

// Update runs fn in one write transaction: everything fn changes through tx
// is committed together when fn returns nil, and nothing is when it returns
// an error (returned as is) or panics. Write transactions run one at a
// time; Update waits for the one in progress, in this process and in
// others. fn must not keep tx, use it from another goroutine, or call
// methods of c (that would deadlock).
func (c *Catalog) Update(fn func(tx *Tx) error) error {
	var fnErr error
	t := &Tx{c: c}
	// Whatever happens, locks the transaction took and did not hand over
	// are released (a panic of fn included).
	defer t.rolledBack()
	err := c.withDB(true, func(db *bolt.DB) error {
		err := db.Update(func(btx *bolt.Tx) error {
			t.tx = btx
			fnErr = fn(t)
			return fnErr
		})
		if err == nil {
			t.committed()
		}
		return err
	})
	return c.txError("update", fnErr, err)
}

// View runs fn in one read-only transaction: fn sees one consistent state
// of the catalog. Write methods of tx fail. The rules of Update about tx
// apply.
func (c *Catalog) View(fn func(tx *Tx) error) error {
	var fnErr error
	err := c.withDB(false, func(db *bolt.DB) error {
		return db.View(func(btx *bolt.Tx) error {
			fnErr = fn(&Tx{tx: btx, c: c})
			return fnErr
		})
	})
	return c.txError("read", fnErr, err)
}

// txError is the error of a transaction: fn's own as is, unless it found
// damage, and the file's named.
func (c *Catalog) txError(op string, fnErr, err error) error {
	if fnErr != nil {
		err = fnErr
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrDamaged):
		return damaged(c.path, err)
	case fnErr != nil || strings.Contains(err.Error(), c.path):
		return err
	}
	return fmt.Errorf("%s catalog %s: %w", op, c.path, err)
}

func (c *Catalog) now() time.Time { return c.clock().UTC() }

// setLive records id as a session of this process, with the lock of its
// job when it has one. A session already live keeps its lock.
func (c *Catalog) setLive(id string, l *jobLock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.live[id]; ok && old != nil {
		if l != old {
			l.release()
		}
		return
	}
	if c.closed {
		l.release()
		return
	}
	c.live[id] = l
}

// clearLive forgets id and releases its job's lock.
func (c *Catalog) clearLive(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[id].release()
	delete(c.live, id)
}

// holdsJob tells whether this Catalog value holds the lock of job, for a
// session it began.
func (c *Catalog) holdsJob(job string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.live {
		if l != nil && l.job == job {
			return true
		}
	}
	return false
}

func (c *Catalog) isLive(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.live[id]
	return ok
}
