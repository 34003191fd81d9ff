package local

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A repository folder holds one file per object:
//
//	REPO/lock                 flock: every put and delete holds it
//	REPO/floor                JSON: a generation every new object starts above
//	REPO/objects/<name>       one object
//
// <name> is the key with every byte outside [A-Za-z0-9_-] written as %XX,
// so '/' and '.' never reach the file system; a key whose escaped form is
// longer than 200 bytes is stored as "~" + SHA-256 of the key (a name no
// escaped key can take, as '~' is always escaped). An object file is the
// line "FERRYOBJ1", a JSON header line (key, generation, size, CRC-32C,
// time) and the data. Puts write a temporary file, fsync it and rename it
// into place, so readers see the old or the new object, never a mix.
//
// A put's generation is above the object's last one and at least the
// time in microseconds, so a key deleted and put again goes on from above
// its old generations (a writer holding one from before the delete cannot
// win a compare-and-swap by accident) while deleting just removes the
// file. The floor covers what the clock cannot: it is raised when an
// object whose generation is ahead of the clock is deleted, and it holds
// the generations of the tombstone files older versions kept for deleted
// objects, which opening the repository folds into it once.

const (
	objectMagic   = "FERRYOBJ1\n"
	maxEscapedKey = 200
)

// Repository serves a folder as an sdk.Repository.
type Repository struct {
	root string
	now  func() time.Time
	// mu orders this process's puts and deletes before they take the
	// folder's flock, which is polled: waiters here wake as soon as the
	// holder is done.
	mu sync.Mutex
	// prepared, when set, is called between writing a put's temporary
	// file and taking the lock (tests race other writers there).
	prepared func(key string)
}

var _ sdk.Repository = (*Repository)(nil)

// NewRepository opens the repository folder root, creating it when
// missing, and clears temporary files a killed process left.
func NewRepository(root string) (*Repository, error) {
	if err := checkFolder(root, true); err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	if err := mkdirDurable(filepath.Join(root, "objects")); err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	r := &Repository{root: root, now: time.Now}
	lock, err := r.lock(context.Background())
	if err != nil {
		return nil, err
	}
	defer lock.unlock()
	if err := removeTemps(r.objects()); err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, floorFile)); errors.Is(err, fs.ErrNotExist) {
		// First opened by this version: fold the tombstones an older one
		// may have left, and write the floor, so that this is done once.
		if err := r.foldTombstones(); err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		if _, err := os.Stat(filepath.Join(root, floorFile)); errors.Is(err, fs.ErrNotExist) {
			if err := writeJSONAtomic(filepath.Join(root, floorFile), floorState{}); err != nil {
				return nil, fmt.Errorf("open repository: %w", err)
			}
		}
	}
	return r, nil
}

func (r *Repository) objects() string { return filepath.Join(r.root, "objects") }

// lock takes the repository's lock; release it with unlockRepo.
func (r *Repository) lock(ctx context.Context) (*repoLock, error) {
	r.mu.Lock()
	l, err := lockFile(ctx, filepath.Join(r.root, lockFileName))
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	return &repoLock{r: r, l: l}, nil
}

// repoLock is a held repository lock.
type repoLock struct {
	r *Repository
	l *fileLock
}

func (l *repoLock) unlock() {
	l.l.unlock()
	l.r.mu.Unlock()
}

type objectHeader struct {
	Key        string    `json:"key"`
	Generation int64     `json:"generation"`
	Size       int64     `json:"size"`
	CRC32C     uint32    `json:"crc32c"`
	Modified   time.Time `json:"modified"`
	Deleted    bool      `json:"deleted,omitempty"`
}

// objectName is the file name of a key.
func objectName(key string) string {
	name := escapeKey(key)
	if len(name) > maxEscapedKey {
		sum := sha256.Sum256([]byte(key))
		return "~" + hex.EncodeToString(sum[:])
	}
	return name
}

// escapeKey writes every byte of key outside [A-Za-z0-9_-] as %XX. It
// works byte by byte, so the escaped form of a key's prefix is a prefix of
// the key's escaped form.
func escapeKey(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func checkKey(key string) error {
	if key == "" || !utf8.ValidString(key) {
		return fmt.Errorf("object key %q: empty or not UTF-8: %w", key, errdefs.ErrInvalidArgument)
	}
	return nil
}

// readObject reads an object file's header, and its data when withData.
func readObject(path string, withData bool) (*objectHeader, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, err := br.ReadString('\n')
	if err != nil || magic != objectMagic {
		return nil, nil, fmt.Errorf("object %s: not an object file", path)
	}
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, nil, fmt.Errorf("object %s: torn header", path)
	}
	var h objectHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, nil, fmt.Errorf("object %s: header: %w", path, err)
	}
	if !withData || h.Deleted {
		return &h, nil, nil
	}
	// The data is the rest of the file: exactly the size the header gives.
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read object %s: %w", path, err)
	}
	if rest := fi.Size() - int64(len(magic)+len(line)); rest != h.Size {
		return nil, nil, fmt.Errorf("object %q (%s): %d bytes of data, its header says %d (the file is corrupt)", h.Key, path, rest, h.Size)
	}
	data := make([]byte, h.Size)
	n, err := io.ReadFull(br, data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read object %s: %w", path, err)
	}
	if int64(n) != h.Size || crc32.Checksum(data, castagnoli) != h.CRC32C {
		return nil, nil, fmt.Errorf("object %q (%s): data does not match its header (the file is corrupt)", h.Key, path)
	}
	return &h, data, nil
}

// current returns the header of key's file.
//
// A key with no file has a header that says deleted, at the floor's
// generation: a new object there starts above every deleted one.
func (r *Repository) current(key string) (*objectHeader, error) {
	h, _, err := readObject(filepath.Join(r.objects(), objectName(key)), false)
	if errors.Is(err, fs.ErrNotExist) {
		floor, err := r.floor()
		if err != nil {
			return nil, err
		}
		return &objectHeader{Key: key, Generation: floor, Deleted: true}, nil
	}
	if err != nil {
		return nil, err
	}
	if h.Key != key {
		return nil, fmt.Errorf("object %q: its file holds %q", key, h.Key)
	}
	return h, nil
}

// encode returns the content of h's object file.
func (r *Repository) encode(h *objectHeader, data []byte) []byte {
	hdr, err := json.Marshal(h)
	if err != nil {
		panic(err) // a header always encodes
	}
	b := make([]byte, 0, len(objectMagic)+len(hdr)+1+len(data))
	b = append(b, objectMagic...)
	b = append(b, hdr...)
	b = append(b, '\n')
	return append(b, data...)
}

func (r *Repository) write(h *objectHeader, data []byte) error {
	return writeFileAtomic(filepath.Join(r.objects(), objectName(h.Key)), r.encode(h, data))
}

// Put stores data under key when the generation condition holds.
//
// The object file is written and synced before the lock is taken, with
// the generation it gets if the key does not change meanwhile, so that
// puts of different keys overlap their writes; under the lock only the
// check, the rename and the folder's sync are done, unless the key
// changed since (or the temporary file was cleared by a process opening
// the repository): then the file is written again under the lock.
func (r *Repository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if ifGeneration < sdk.IfAny {
		return 0, fmt.Errorf("put %q: generation %d: %w", key, ifGeneration, errdefs.ErrInvalidArgument)
	}
	h := &objectHeader{Key: key, Size: int64(len(data)), CRC32C: crc32.Checksum(data, castagnoli), Modified: r.now().UTC()}
	path := filepath.Join(r.objects(), objectName(key))
	fail := func(err error) (int64, error) {
		return 0, fmt.Errorf("put %q%s: %w", key, describeCond(ifGeneration), err)
	}
	seen, err := r.current(key)
	if err != nil {
		return fail(err)
	}
	var tmp string
	if checkPut(seen, ifGeneration) == nil {
		h.Generation = r.nextGeneration(seen)
		if tmp, err = r.prepare(h, data); err != nil {
			return fail(err)
		}
		defer func() {
			if tmp != "" {
				os.Remove(tmp)
			}
		}()
	}
	if r.prepared != nil {
		r.prepared(key)
	}
	lock, err := r.lock(ctx)
	if err != nil {
		return fail(err)
	}
	defer lock.unlock()
	cur, err := r.current(key)
	if err != nil {
		return fail(err)
	}
	if err := checkPut(cur, ifGeneration); err != nil {
		return fail(err)
	}
	if tmp != "" && cur.Generation == seen.Generation && cur.Deleted == seen.Deleted {
		err := os.Rename(tmp, path)
		if err == nil {
			tmp = ""
			if err := syncDir(r.objects()); err != nil {
				return fail(err)
			}
			return h.Generation, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fail(fmt.Errorf("rename %s: %w", tmp, err))
		}
	}
	h.Generation = r.nextGeneration(cur)
	if err := r.write(h, data); err != nil {
		return fail(err)
	}
	return h.Generation, nil
}

// checkPut checks a put's condition against the key's current header.
func checkPut(cur *objectHeader, ifGeneration int64) error {
	live, gen := !cur.Deleted, cur.Generation
	switch {
	case ifGeneration == sdk.IfAny:
	case ifGeneration == sdk.IfAbsent && live:
		return fmt.Errorf("exists at generation %d: %w", gen, errdefs.ErrFailedPrecondition)
	case ifGeneration > 0 && (!live || gen != ifGeneration):
		return fmt.Errorf("%s: %w", describeGen(live, gen), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// nextGeneration is the generation a put over cur gives: above cur's, and
// at least the time in microseconds. A key deleted and put again so gets
// a generation above its old ones without any record of the delete (its
// old ones were at most the time of their puts); the floor covers a clock
// that went back.
func (r *Repository) nextGeneration(cur *objectHeader) int64 {
	return max(cur.Generation+1, r.now().UnixMicro())
}

// describeCond names a put's or delete's condition in errors.
func describeCond(ifGeneration int64) string {
	switch ifGeneration {
	case sdk.IfAny:
		return ""
	case sdk.IfAbsent:
		return " if absent"
	}
	return fmt.Sprintf(" if generation %d", ifGeneration)
}

// prepare writes and syncs the object file of h in a temporary file and
// returns its path.
func (r *Repository) prepare(h *objectHeader, data []byte) (string, error) {
	f, err := os.CreateTemp(r.objects(), tempPrefix+objectName(h.Key)+"-*")
	if err != nil {
		return "", fmt.Errorf("write object: %w", err)
	}
	_, err = f.Write(r.encode(h, data))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

func describeGen(live bool, gen int64) string {
	if !live {
		return "no such object"
	}
	return fmt.Sprintf("generation is %d", gen)
}

// Get returns an object; ErrNotFound when there is none.
func (r *Repository) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	if err := canceled(ctx); err != nil {
		return nil, sdk.ObjectInfo{}, err
	}
	if err := checkKey(key); err != nil {
		return nil, sdk.ObjectInfo{}, err
	}
	h, data, err := readObject(filepath.Join(r.objects(), objectName(key)), true)
	if errors.Is(err, fs.ErrNotExist) || err == nil && h.Deleted {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q in repository %s: %w", key, r.root, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("get %q: %w", key, err)
	}
	if h.Key != key {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("get %q: its file holds %q", key, h.Key)
	}
	if data == nil {
		data = []byte{}
	}
	return data, h.info(), nil
}

func (h *objectHeader) info() sdk.ObjectInfo {
	return sdk.ObjectInfo{Key: h.Key, Generation: h.Generation, Size: h.Size, Modified: h.Modified}
}

// List lists the objects whose key starts with prefix, sorted by key.
func (r *Repository) List(ctx context.Context, prefix string) ([]sdk.ObjectInfo, error) {
	entries, err := os.ReadDir(r.objects())
	if err != nil {
		return nil, fmt.Errorf("list repository %s: %w", r.root, err)
	}
	out := []sdk.ObjectInfo{}
	// Only files whose name can hold a key with the prefix are read: those
	// starting with the prefix escaped, and hashed names.
	namePrefix := escapeKey(prefix)
	for _, e := range entries {
		if err := canceled(ctx); err != nil {
			return nil, err
		}
		if name := e.Name(); !strings.HasPrefix(name, namePrefix) && !strings.HasPrefix(name, "~") || strings.HasPrefix(name, tempPrefix) {
			continue
		}
		h, _, err := readObject(filepath.Join(r.objects(), e.Name()), false)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted or replaced since ReadDir
		}
		if err != nil {
			return nil, fmt.Errorf("list repository %s: %w", r.root, err)
		}
		if !h.Deleted && strings.HasPrefix(h.Key, prefix) {
			out = append(out, h.info())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes an object when the generation condition holds; deleting
// a missing object with IfAny succeeds.
func (r *Repository) Delete(ctx context.Context, key string, ifGeneration int64) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if ifGeneration < sdk.IfAny {
		return fmt.Errorf("delete %q: generation %d: %w", key, ifGeneration, errdefs.ErrInvalidArgument)
	}
	lock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer lock.unlock()
	if err := r.remove(key, ifGeneration); err != nil {
		return fmt.Errorf("delete %q%s: %w", key, describeCond(ifGeneration), err)
	}
	return nil
}

// remove deletes key's object when the condition holds: it raises the
// floor to the object's generation, then removes the file. Callers hold
// the lock.
func (r *Repository) remove(key string, ifGeneration int64) error {
	cur, err := r.current(key)
	if err != nil {
		return err
	}
	live := !cur.Deleted
	switch {
	case ifGeneration == sdk.IfAny, ifGeneration == sdk.IfAbsent:
		if ifGeneration == sdk.IfAbsent && live {
			return fmt.Errorf("exists at generation %d: %w", cur.Generation, errdefs.ErrFailedPrecondition)
		}
	case !live || cur.Generation != ifGeneration:
		return fmt.Errorf("%s: %w", describeGen(live, cur.Generation), errdefs.ErrFailedPrecondition)
	}
	path := filepath.Join(r.objects(), objectName(key))
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if cur.Generation >= r.now().UnixMicro() {
		// The clock is behind this object's generation (it went back, or
		// the object was put faster than once a microsecond): a new
		// object here must still start above it.
		if err := r.raiseFloor(cur.Generation); err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(r.objects())
}

// floorFile holds the highest generation a deleted object had.
const floorFile = "floor"

type floorState struct {
	Generation int64 `json:"generation"`
}

// floor returns the highest generation a deleted object had.
func (r *Repository) floor() (int64, error) {
	var f floorState
	err := readJSON(filepath.Join(r.root, floorFile), &f)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("repository %s: %w", r.root, err)
	}
	return f.Generation, nil
}

// raiseFloor makes the floor at least gen, durably. Callers hold the lock.
func (r *Repository) raiseFloor(gen int64) error {
	cur, err := r.floor()
	if err != nil || gen <= cur {
		return err
	}
	return writeJSONAtomic(filepath.Join(r.root, floorFile), floorState{Generation: gen})
}

// foldTombstones replaces the tombstone files of deleted objects, which
// repositories kept before the floor existed, with the floor. Callers hold
// the lock.
func (r *Repository) foldTombstones() error {
	entries, err := os.ReadDir(r.objects())
	if err != nil {
		return fmt.Errorf("list repository %s: %w", r.root, err)
	}
	var tombs []string
	var highest int64
	for _, e := range entries {
		// A tombstone is a header alone: small. Only small files are read.
		info, err := e.Info()
		if err != nil || info.Size() > maxTombstoneBytes || strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		path := filepath.Join(r.objects(), e.Name())
		h, _, err := readObject(path, false)
		if err != nil || !h.Deleted {
			continue
		}
		tombs = append(tombs, path)
		highest = max(highest, h.Generation)
	}
	if len(tombs) == 0 {
		return nil
	}
	if err := r.raiseFloor(highest); err != nil {
		return err
	}
	for _, path := range tombs {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove tombstone %s: %w", path, err)
		}
	}
	return syncDir(r.objects())
}

// maxTombstoneBytes is more than any tombstone file takes: the magic line
// and a header with a key of at most a few KiB.
const maxTombstoneBytes = 64 << 10
