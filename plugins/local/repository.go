package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ferry-dr/ferry/plugins/internal/filelock"
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
// time) and the data. The header's last member, "hcrc", is the CRC-32C
// of the header line without it (and without the newline), so that a
// damaged generation or size is seen; headers written before it existed
// have no "hcrc" and hold only the members of then. Puts write a temporary file, fsync it and rename it
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
	// maxKeyBytes bounds keys so that a header line is never longer than
	// maxHeadBytes (JSON writes a byte as at most six), and a reader may
	// give up on a longer one as damaged instead of reading on.
	maxKeyBytes  = 4 << 10
	maxHeadBytes = 64 << 10
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
	l, err := filelock.Acquire(ctx, filepath.Join(r.root, lockFileName))
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	return &repoLock{r: r, l: l}, nil
}

// repoLock is a held repository lock.
type repoLock struct {
	r *Repository
	l *filelock.Lock
}

func (l *repoLock) unlock() {
	l.l.Release()
	l.r.mu.Unlock()
}

type objectHeader struct {
	Key        string    `json:"key"`
	Generation int64     `json:"generation"`
	Size       int64     `json:"size"`
	CRC32C     uint32    `json:"crc32c"`
	Modified   time.Time `json:"modified"`
	Deleted    bool      `json:"deleted,omitempty"`
	// HeaderCRC must stay the last member: it is checked against the
	// header line without its text (see encode).
	HeaderCRC uint32 `json:"hcrc,omitempty"`
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

// unescapeName returns the key whose file name is name, or false when no
// key has that name or the name is a hash.
func unescapeName(name string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			b.WriteByte(name[i])
			continue
		}
		if i+2 >= len(name) {
			return "", false
		}
		c, err := strconv.ParseUint(name[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(c))
		i += 2
	}
	key := b.String()
	// Only the name escapeKey gives is the key's: "%2f", "%41" or "." are
	// no key's.
	if checkKey(key) != nil || objectName(key) != name {
		return "", false
	}
	return key, true
}

func checkKey(key string) error {
	if key == "" || !utf8.ValidString(key) {
		return fmt.Errorf("object key %q: empty or not UTF-8: %w", key, errdefs.ErrInvalidArgument)
	}
	if len(key) > maxKeyBytes {
		return fmt.Errorf("object key %.40q...: %d bytes, more than %d: %w", key, len(key), maxKeyBytes, errdefs.ErrInvalidArgument)
	}
	return nil
}

// damageError reports an object file that fails its checks: it exists,
// but what it holds cannot be trusted. Its class is errdefs.ErrDataLoss.
type damageError struct {
	path   string
	reason string
}

func (e *damageError) Error() string {
	return fmt.Sprintf("object file %s is damaged: %s", e.path, e.reason)
}

func (e *damageError) Unwrap() error { return errdefs.ErrDataLoss }

func damaged(path, format string, args ...any) error {
	return &damageError{path: path, reason: fmt.Sprintf(format, args...)}
}

// readObject reads an object file's header, and its data when withData.
//
// A file that fails a check is reported as a *damageError: no magic line,
// a header that is torn, longer than maxHeadBytes, not JSON, absurd
// (a negative size, a generation that is not positive) or holding a key
// whose file is another. With data, the data must also have exactly the
// header's size and CRC-32C. The size is checked against the file's
// before anything is allocated, so a hostile header cannot make a read
// take more memory than the file has bytes.
func readObject(path string, withData bool) (*objectHeader, []byte, error) {
	o, err := openObject(path)
	if err != nil {
		return nil, nil, err
	}
	defer o.f.Close()
	h := o.h
	if !withData || h.Deleted {
		return h, nil, nil
	}
	if err := o.sized(); err != nil {
		return nil, nil, err
	}
	data := make([]byte, h.Size)
	n := copy(data, o.head[o.end:])
	if _, err := io.ReadFull(o.f, data[n:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, nil, damaged(path, "its data ends before the %d bytes its header says", h.Size)
		}
		return nil, nil, fmt.Errorf("read object file %s: %w", path, err)
	}
	if crc32.Checksum(data, castagnoli) != h.CRC32C {
		return nil, nil, damaged(path, "its data does not match the header's CRC-32C")
	}
	return h, data, nil
}

// openedObject is an object file open after its header: the file, its
// size, the header read and the bytes read with it (the data starts at
// end).
type openedObject struct {
	f    *os.File
	path string
	size int64
	h    *objectHeader
	head []byte
	end  int
}

// openObject opens an object file and reads its header; the caller
// closes f. The errors are readObject's.
func openObject(path string) (*openedObject, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	o, err := readObjectHead(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return o, nil
}

func readObjectHead(f *os.File, path string) (*openedObject, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read object file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, damaged(path, "not a regular file")
	}
	head, end, err := readHead(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("read object file %s: %w", path, err)
	}
	switch {
	case len(head) < len(objectMagic) || string(head[:len(objectMagic)]) != objectMagic:
		return nil, damaged(path, "not an object file")
	case end < 0 && len(head) >= maxHeadBytes:
		return nil, damaged(path, "no end of header in its first %d bytes", maxHeadBytes)
	case end < 0:
		return nil, damaged(path, "torn header")
	}
	var h objectHeader
	line := head[len(objectMagic) : end-1]
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, damaged(path, "header: %v", err)
	}
	if err := checkHeaderLine(line, h.HeaderCRC); err != nil {
		return nil, damaged(path, "header: %v", err)
	}
	switch {
	case h.Size < 0 || h.Generation <= 0 || h.Generation == math.MaxInt64:
		return nil, damaged(path, "absurd header: size %d, generation %d", h.Size, h.Generation)
	case checkKey(h.Key) != nil:
		return nil, damaged(path, "absurd header: key %q", h.Key)
	case objectName(h.Key) != filepath.Base(path):
		return nil, damaged(path, "its header holds the key %q, whose file is %s", h.Key, objectName(h.Key))
	}
	return &openedObject{f: f, path: path, size: fi.Size(), h: &h, head: head, end: end}, nil
}

// sized checks that the data is the rest of the file: exactly the size
// the header gives.
func (o *openedObject) sized() error {
	if rest := o.size - int64(o.end); rest != o.h.Size {
		return damaged(o.path, "%d bytes of data, its header says %d", rest, o.h.Size)
	}
	return nil
}

// checkHeaderLine checks a header line against its checksum sum (its "hcrc"
// member). A line without one was written before checksums were: it must
// hold no member unknown then, or it may be a checksummed line whose
// "hcrc" is damaged.
func checkHeaderLine(line []byte, sum uint32) error {
	if sum == 0 {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		return dec.Decode(&struct {
			Key        string    `json:"key"`
			Generation int64     `json:"generation"`
			Size       int64     `json:"size"`
			CRC32C     uint32    `json:"crc32c"`
			Modified   time.Time `json:"modified"`
			Deleted    bool      `json:"deleted"`
		}{})
	}
	member := `,"hcrc":` + strconv.FormatUint(uint64(sum), 10) + "}"
	if !bytes.HasSuffix(line, []byte(member)) {
		return errors.New(`"hcrc" is not its last member`)
	}
	got := crc32.Update(crc32.Checksum(line[:len(line)-len(member)], castagnoli), castagnoli, []byte("}"))
	if got != sum {
		return fmt.Errorf("its CRC-32C is %08x, its \"hcrc\" says %08x", got, sum)
	}
	return nil
}

// readHead reads the start of an object file of size bytes until the end
// of its header line, at most maxHeadBytes, and returns what it read and
// where the header line ends (-1: not within what was read). It reads 4
// KiB first, as most headers are far shorter.
func readHead(f io.Reader, size int64) ([]byte, int, error) {
	limit := int(min(size, maxHeadBytes))
	head := make([]byte, 0, min(limit, 4<<10))
	for len(head) < limit {
		more := make([]byte, min(limit, max(2*len(head), 4<<10))-len(head))
		n, err := io.ReadFull(f, more)
		head = append(head, more[:n]...)
		if i := bytes.IndexByte(head[min(len(head), len(objectMagic)):], '\n'); i >= 0 {
			return head, min(len(head), len(objectMagic)) + i + 1, nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			break // shorter than it was a moment ago
		}
		if err != nil {
			return nil, -1, err
		}
	}
	return head, -1, nil
}

// objectState is a key's object as Put and Delete see it.
type objectState struct {
	live bool
	// gen is the object's generation when live, else the floor's; new
	// generations go above it.
	gen int64
	// damage, when set, says why the object's file cannot be read: the
	// object exists, at a generation no condition can name.
	damage error
}

// current returns the state of key's object.
//
// A key with no file is deleted at the floor's generation: a new object
// there starts above every deleted one. A key whose file is damaged
// counts as existing, at an unknown generation; new generations go above
// the floor's there too. Only the header is read: an object whose data
// alone is damaged keeps the generation its header gives.
func (r *Repository) current(key string) (objectState, error) {
	h, _, err := readObject(filepath.Join(r.objects(), objectName(key)), false)
	if err == nil && !h.Deleted {
		return objectState{live: true, gen: h.Generation}, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errdefs.ErrDataLoss) {
		return objectState{}, err
	}
	floor, ferr := r.floor()
	if ferr != nil {
		return objectState{}, ferr
	}
	switch {
	case errors.Is(err, errdefs.ErrDataLoss):
		return objectState{live: true, gen: floor, damage: err}, nil
	case err == nil: // a tombstone an older version left
		return objectState{gen: max(floor, h.Generation)}, nil
	}
	return objectState{gen: floor}, nil
}

// encode returns the content of h's object file: head, then the data.
func (r *Repository) encode(h *objectHeader, data []byte) []byte {
	return append(r.head(h), data...)
}

// head returns the start of h's object file: the magic line and the
// header line.
//
// It sets h.HeaderCRC: the header is encoded without it, its checksum
// taken, and encoded again, which appends `,"hcrc":N` before the closing
// brace (encoding/json keeps the order of the members).
func (r *Repository) head(h *objectHeader) []byte {
	h.HeaderCRC = 0
	hdr, err := json.Marshal(h)
	if err != nil {
		panic(err) // a header always encodes
	}
	h.HeaderCRC = crc32.Checksum(hdr, castagnoli)
	if hdr, err = json.Marshal(h); err != nil {
		panic(err)
	}
	b := make([]byte, 0, len(objectMagic)+len(hdr)+1)
	b = append(b, objectMagic...)
	b = append(b, hdr...)
	return append(b, '\n')
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
	if checkCond(seen, ifGeneration) == nil {
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
	if err := checkCond(cur, ifGeneration); err != nil {
		return fail(err)
	}
	if tmp != "" && cur.gen == seen.gen && cur.live == seen.live && (cur.damage == nil) == (seen.damage == nil) {
		err := replaceFile(tmp, path)
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

// checkCond checks a put's or delete's condition against the key's
// current state. A damaged object exists, at a generation no condition
// names: only IfAny passes, and the caller learns why the others fail.
// The error's class is the failed precondition alone (the damage is in
// its message), so that it stays one class across the wire.
func checkCond(cur objectState, ifGeneration int64) error {
	live, gen := cur.live, cur.gen
	switch {
	case ifGeneration == sdk.IfAny:
	case cur.damage != nil:
		return fmt.Errorf("%s; its generation is unknown: %w", cur.damage, errdefs.ErrFailedPrecondition)
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
// that went back. A damaged object's generation is unknown: the put goes
// above the floor and the clock, as for a deleted one.
func (r *Repository) nextGeneration(cur objectState) int64 {
	return max(cur.gen+1, r.now().UnixMicro())
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
	// Two writes rather than a copy of the data behind the header.
	_, err = f.Write(r.head(h))
	if err == nil {
		_, err = f.Write(data)
	}
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

// Get returns an object; ErrNotFound when there is none, ErrDataLoss
// when its file is damaged (see readObject).
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
		// Two keys with one file name: only a SHA-256 collision does that.
		return nil, sdk.ObjectInfo{}, fmt.Errorf("get %q: %w", key, damaged(filepath.Join(r.objects(), objectName(key)), "its header holds the key %q", h.Key))
	}
	if data == nil {
		data = []byte{}
	}
	return data, h.info(), nil
}

var _ sdk.ObjectLocator = (*Repository)(nil)

// LocateObject says which file holds key's data, for a host on this
// machine to read itself (sdk.ObjectLocator). The data is not read: the
// host checks it against the header's CRC-32C, and a file found damaged
// then is reported by the Get the host falls back to.
func (r *Repository) LocateObject(ctx context.Context, key string) (sdk.ObjectFile, error) {
	if err := canceled(ctx); err != nil {
		return sdk.ObjectFile{}, err
	}
	if err := checkKey(key); err != nil {
		return sdk.ObjectFile{}, err
	}
	path := filepath.Join(r.objects(), objectName(key))
	if abs, err := filepath.Abs(path); err == nil {
		path = abs // the host's working folder may not be this process's
	}
	o, err := openObject(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && o.h.Deleted {
		if err == nil {
			o.f.Close()
		}
		return sdk.ObjectFile{}, fmt.Errorf("object %q in repository %s: %w", key, r.root, errdefs.ErrNotFound)
	}
	if err != nil {
		return sdk.ObjectFile{}, fmt.Errorf("get %q: %w", key, err)
	}
	defer o.f.Close()
	if o.h.Key != key {
		return sdk.ObjectFile{}, fmt.Errorf("get %q: %w", key, damaged(path, "its header holds the key %q", o.h.Key))
	}
	if err := o.sized(); err != nil {
		return sdk.ObjectFile{}, fmt.Errorf("get %q: %w", key, err)
	}
	return sdk.ObjectFile{Info: o.h.info(), Path: path, Offset: int64(o.end), CRC32C: o.h.CRC32C}, nil
}

func (h *objectHeader) info() sdk.ObjectInfo {
	return sdk.ObjectInfo{Key: h.Key, Generation: h.Generation, Size: h.Size, Modified: h.Modified}
}

// List lists the objects whose key starts with prefix, sorted by key.
//
// A damaged file does not fail the listing. One whose header reads whole
// is listed as its header says (only its data can be damaged, which Get
// checks). One whose header is damaged is listed with generation 0 (its
// generation is unknown) under the key its file name spells, so that a
// sweep can delete it; when its name is a hash, the key is unknown and
// the file is skipped (the plugin has no log to tell): Get of its key
// reports it, and Put or Delete with IfAny replaces or removes it.
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
		if errors.Is(err, errdefs.ErrDataLoss) {
			if key, ok := unescapeName(e.Name()); ok && strings.HasPrefix(key, prefix) {
				info := sdk.ObjectInfo{Key: key}
				if fi, err := e.Info(); err == nil {
					info.Modified = fi.ModTime().UTC()
				}
				out = append(out, info)
			}
			continue
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
	if err := checkCond(cur, ifGeneration); err != nil {
		return err
	}
	path := filepath.Join(r.objects(), objectName(key))
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if cur.gen >= r.now().UnixMicro() {
		// The clock is behind this object's generation (it went back, or
		// the object was put faster than once a microsecond): a new
		// object here must still start above it.
		if err := r.raiseFloor(cur.gen); err != nil {
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
