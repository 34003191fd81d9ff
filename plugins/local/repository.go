package local

import (
	"bufio"
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
	"os"
	"path/filepath"
	"sort"
	"strings"
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

func (r *Repository) lock(ctx context.Context) (*fileLock, error) {
	return lockFile(ctx, filepath.Join(r.root, lockFileName))
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

// readHeader reads an object file's header, and its data when withData.
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
	data, err := io.ReadAll(io.LimitReader(br, h.Size+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read object %s: %w", path, err)
	}
	if int64(len(data)) != h.Size || crc32.Checksum(data, castagnoli) != h.CRC32C {
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

func (r *Repository) write(h *objectHeader, data []byte) error {
	hdr, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode object header: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString(objectMagic)
	buf.Write(hdr)
	buf.WriteByte('\n')
	buf.Write(data)
	return writeFileAtomic(filepath.Join(r.objects(), objectName(h.Key)), buf.Bytes())
}

// Put stores data under key when the generation condition holds.
func (r *Repository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if ifGeneration < sdk.IfAny {
		return 0, fmt.Errorf("put %q: generation %d: %w", key, ifGeneration, errdefs.ErrInvalidArgument)
	}
	lock, err := r.lock(ctx)
	if err != nil {
		return 0, err
	}
	defer lock.unlock()
	cur, err := r.current(key)
	if err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	live := cur != nil && !cur.Deleted
	var gen int64
	if cur != nil {
		gen = cur.Generation
	}
	switch {
	case ifGeneration == sdk.IfAny:
	case ifGeneration == sdk.IfAbsent && live:
		return 0, fmt.Errorf("put %q if absent: exists at generation %d: %w", key, gen, errdefs.ErrFailedPrecondition)
	case ifGeneration > 0 && (!live || gen != ifGeneration):
		return 0, fmt.Errorf("put %q if generation %d: %s: %w", key, ifGeneration, describeGen(live, gen), errdefs.ErrFailedPrecondition)
	}
	h := &objectHeader{
		Key: key, Generation: gen + 1, Size: int64(len(data)),
		CRC32C: crc32.Checksum(data, castagnoli), Modified: r.now().UTC(),
	}
	if err := r.write(h, data); err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	return h.Generation, nil
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
	lock, err := r.lock(ctx)
	if err != nil {
		return err
	}
	defer lock.unlock()
	cur, err := r.current(key)
	if err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	live := cur != nil && !cur.Deleted
	switch {
	case ifGeneration == sdk.IfAny, ifGeneration == sdk.IfAbsent:
		if ifGeneration == sdk.IfAbsent && live {
			return fmt.Errorf("delete %q if absent: exists at generation %d: %w", key, cur.Generation, errdefs.ErrFailedPrecondition)
		}
	case !live || cur.Generation != ifGeneration:
		var gen int64
		if cur != nil {
			gen = cur.Generation
		}
		return fmt.Errorf("delete %q if generation %d: %s: %w", key, ifGeneration, describeGen(live, gen), errdefs.ErrFailedPrecondition)
	}
	if !live {
		return nil
	}
	tomb := &objectHeader{Key: key, Generation: cur.Generation, Modified: r.now().UTC(), Deleted: true}
	if err := r.write(tomb, nil); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	return nil
}
