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
//	REPO/objects/<name>       one object (or the tombstone of a deleted one)
//
// <name> is the key with every byte outside [A-Za-z0-9_-] written as %XX,
// so '/' and '.' never reach the file system; a key whose escaped form is
// longer than 200 bytes is stored as "~" + SHA-256 of the key (a name no
// escaped key can take, as '~' is always escaped). An object file is the
// line "FERRYOBJ1", a JSON header line (key, generation, size, CRC-32C,
// time, deleted) and the data. Puts write a temporary file, fsync it and
// rename it into place, so readers see the old or the new object, never a
// mix. Deleting leaves a tombstone that remembers the generation: a key
// that is put again continues from it, so a writer holding a generation
// from before the delete cannot win a compare-and-swap by accident.

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
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() > maxEscapedKey {
		sum := sha256.Sum256([]byte(key))
		return "~" + hex.EncodeToString(sum[:])
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

// current returns the header of key's file: nil when there is none.
func (r *Repository) current(key string) (*objectHeader, error) {
	h, _, err := readObject(filepath.Join(r.objects(), objectName(key)), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
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
func (r *Repository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if ifGeneration < sdk.IfAny {
		return 0, fmt.Errorf("put %q: generation %d: %w", key, ifGeneration, errdefs.ErrInvalidArgument)
	}
	h := &objectHeader{Key: key, Size: int64(len(data)), CRC32C: crc32.Checksum(data, castagnoli), Modified: r.now().UTC()}
	err := r.replace(ctx, h, data, func(cur *objectHeader) error {
		live := cur != nil && !cur.Deleted
		var gen int64
		if cur != nil {
			gen = cur.Generation
		}
		switch {
		case ifGeneration == sdk.IfAny:
		case ifGeneration == sdk.IfAbsent && live:
			return fmt.Errorf("exists at generation %d: %w", gen, errdefs.ErrFailedPrecondition)
		case ifGeneration > 0 && (!live || gen != ifGeneration):
			return fmt.Errorf("%s: %w", describeGen(live, gen), errdefs.ErrFailedPrecondition)
		}
		h.Generation = gen + 1
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("put %q%s: %w", key, describeCond(ifGeneration), err)
	}
	return h.Generation, nil
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

// replace writes the object file of h.Key when check, given the key's
// current header (nil: none), accepts it and fills in h. The file is
// written and synced before the lock is taken, with the header check
// would give it if nothing changes meanwhile, so that puts of different
// keys overlap their writes; under the lock only the check, the rename
// and the folder's sync are done, unless the key changed since (or the
// temporary file was cleared by a process opening the repository): then
// the file is written again under the lock.
func (r *Repository) replace(ctx context.Context, h *objectHeader, data []byte, check func(cur *objectHeader) error) error {
	path := filepath.Join(r.objects(), objectName(h.Key))
	cur, err := r.current(h.Key)
	if err != nil {
		return err
	}
	var tmp string
	if check(cur) == nil {
		if tmp, err = r.prepare(h, data); err != nil {
			return err
		}
		defer func() {
			if tmp != "" {
				os.Remove(tmp)
			}
		}()
	}
	predicted := h.Generation
	if r.prepared != nil {
		r.prepared(h.Key)
	}
	lock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer lock.unlock()
	if cur, err = r.current(h.Key); err != nil {
		return err
	}
	if err := check(cur); err != nil {
		return err
	}
	if tmp != "" && h.Generation == predicted {
		err := os.Rename(tmp, path)
		if err == nil {
			tmp = ""
			return syncDir(filepath.Dir(path))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rename %s: %w", tmp, err)
		}
	}
	return r.write(h, data)
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
	for _, e := range entries {
		if err := canceled(ctx); err != nil {
			return nil, err
		}
		if strings.HasPrefix(e.Name(), tempPrefix) {
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
	tomb := &objectHeader{Key: key, Modified: r.now().UTC(), Deleted: true}
	err := r.replace(ctx, tomb, nil, func(cur *objectHeader) error {
		live := cur != nil && !cur.Deleted
		switch {
		case ifGeneration == sdk.IfAny, ifGeneration == sdk.IfAbsent:
			if ifGeneration == sdk.IfAbsent && live {
				return fmt.Errorf("exists at generation %d: %w", cur.Generation, errdefs.ErrFailedPrecondition)
			}
		case !live || cur.Generation != ifGeneration:
			var gen int64
			if cur != nil {
				gen = cur.Generation
			}
			return fmt.Errorf("%s: %w", describeGen(live, gen), errdefs.ErrFailedPrecondition)
		}
		if !live {
			return errAlreadyGone
		}
		tomb.Generation = cur.Generation
		return nil
	})
	switch {
	case errors.Is(err, errAlreadyGone):
		return nil
	case err != nil:
		return fmt.Errorf("delete %q%s: %w", key, describeCond(ifGeneration), err)
	}
	return nil
}

// errAlreadyGone stops a delete of a key that holds no object.
var errAlreadyGone = errors.New("no object")
