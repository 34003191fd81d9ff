package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestRepositoryCASRace has goroutines of two repository instances on one
// folder (two processes, as far as flock is concerned) increment counters
// with compare-and-swap: every lost race must be reported, so the counts
// come out exact.
func TestRepositoryCASRace(t *testing.T) {
	ctx := context.Background()
	// Clocks that stand still: generations count puts.
	a, b := twoFrozen(t, t.TempDir())
	const workers, each = 12, 15
	keys := []string{"replicas/web-01/meta", "replicas/web-02/meta"}
	for _, k := range keys {
		if _, err := a.Put(ctx, k, []byte("0"), sdk.IfAbsent); err != nil {
			t.Fatal(err)
		}
	}
	var lost sync.Map
	var wg sync.WaitGroup
	for g := range workers {
		repo := a
		if g%2 == 1 {
			repo = b
		}
		wg.Go(func() {
			for i := range each {
				key := keys[(g+i)%2]
				for {
					data, info, err := repo.Get(ctx, key)
					if err != nil {
						t.Error(err)
						return
					}
					n, _ := strconv.Atoi(string(data))
					_, err = repo.Put(ctx, key, []byte(strconv.Itoa(n+1)), info.Generation)
					if err == nil {
						break
					}
					if !errors.Is(err, errdefs.ErrFailedPrecondition) {
						t.Error(err)
						return
					}
					lost.Store(g, true)
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, k := range keys {
		data, info, err := b.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(data))
		total += n
		if info.Generation != int64(n)+1 {
			t.Errorf("%s: generation %d after %d increments", k, info.Generation, n)
		}
	}
	if total != workers*each {
		t.Fatalf("counters add up to %d, want %d", total, workers*each)
	}
}

func TestRepositoryConditions(t *testing.T) {
	ctx := context.Background()
	repo, _ := NewRepository(t.TempDir())
	frozen(repo) // generations count puts; deletes raise the floor
	steps := []struct {
		name    string
		do      func() (int64, error)
		wantGen int64
		wantErr error
	}{
		{"put new", func() (int64, error) { return repo.Put(ctx, "k", []byte("a"), sdk.IfAbsent) }, 1, nil},
		{"put if absent again", func() (int64, error) { return repo.Put(ctx, "k", []byte("b"), sdk.IfAbsent) }, 0, errdefs.ErrFailedPrecondition},
		{"put stale", func() (int64, error) { return repo.Put(ctx, "k", []byte("b"), 7) }, 0, errdefs.ErrFailedPrecondition},
		{"put current", func() (int64, error) { return repo.Put(ctx, "k", []byte("b"), 1) }, 2, nil},
		{"put any", func() (int64, error) { return repo.Put(ctx, "k", []byte("c"), sdk.IfAny) }, 3, nil},
		{"delete stale", func() (int64, error) { return 0, repo.Delete(ctx, "k", 2) }, 0, errdefs.ErrFailedPrecondition},
		{"delete current", func() (int64, error) { return 0, repo.Delete(ctx, "k", 3) }, 0, nil},
		{"delete missing any", func() (int64, error) { return 0, repo.Delete(ctx, "k", sdk.IfAny) }, 0, nil},
		{"delete missing at generation", func() (int64, error) { return 0, repo.Delete(ctx, "k", 3) }, 0, errdefs.ErrFailedPrecondition},
		// A writer still holding generation 1 or 3 must not win after the
		// key comes back: generations go on from the tombstone.
		{"put again", func() (int64, error) { return repo.Put(ctx, "k", []byte("d"), sdk.IfAbsent) }, 4, nil},
		{"put with a pre-delete generation", func() (int64, error) { return repo.Put(ctx, "k", []byte("e"), 3) }, 0, errdefs.ErrFailedPrecondition},
		{"bad generation", func() (int64, error) { return repo.Put(ctx, "k", nil, -2) }, 0, errdefs.ErrInvalidArgument},
		{"empty key", func() (int64, error) { return repo.Put(ctx, "", nil, sdk.IfAny) }, 0, errdefs.ErrInvalidArgument},
	}
	for _, s := range steps {
		gen, err := s.do()
		if s.wantErr != nil {
			if !errors.Is(err, s.wantErr) {
				t.Fatalf("%s: %v, want %v", s.name, err, s.wantErr)
			}
			continue
		}
		if err != nil || gen != s.wantGen {
			t.Fatalf("%s: generation %d, %v; want %d", s.name, gen, err, s.wantGen)
		}
	}
	if _, _, err := repo.Get(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("get missing: %v", err)
	}
}

// TestRepositoryKeys: keys of any shape round-trip, list by prefix in key
// order, and never escape the objects folder.
func TestRepositoryKeys(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	repo, _ := NewRepository(root)
	keys := []string{"a", "a/b", "a/../../etc", ".", "..", "a.b", "a%2Fb", "~x", "日本/語", strings.Repeat("long/", 80) + "end", "a b"}
	for i, k := range keys {
		if _, err := repo.Put(ctx, k, []byte(strconv.Itoa(i)), sdk.IfAbsent); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	for i, k := range keys {
		data, info, err := repo.Get(ctx, k)
		if err != nil || string(data) != strconv.Itoa(i) || info.Key != k {
			t.Fatalf("get %q: %q %+v %v", k, data, info, err)
		}
	}
	list, err := repo.List(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range list {
		got = append(got, o.Key)
	}
	want := []string{"a", "a b", "a%2Fb", "a.b", "a/../../etc", "a/b"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("list a = %q, want %q", got, want)
	}
	// A key stored under a hashed name is listed by its prefix too.
	if list, err := repo.List(ctx, "long/long/"); err != nil || len(list) != 1 || list[0].Key != keys[9] {
		t.Errorf("list of the long key's prefix = %+v, %v", list, err)
	}
	if list, err := repo.List(ctx, strings.Repeat("long/", 60)); err != nil || len(list) != 1 {
		t.Errorf("list by a prefix longer than an unhashed name = %+v, %v", list, err)
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != "objects" && e.Name() != lockFileName && e.Name() != floorFile {
			t.Errorf("a key escaped the objects folder: %s", e.Name())
		}
	}
}

// TestRepositoryLeftoverTemp: leftovers of a killed put are never listed,
// and opening the repository clears them.
func TestRepositoryLeftoverTemp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	repo, _ := NewRepository(root)
	repo.Put(ctx, "x", bytes.Repeat([]byte("data"), 100), sdk.IfAny)
	tmp := filepath.Join(root, "objects", tempPrefix+"y-1")
	os.WriteFile(tmp, []byte("FERRYOBJ1\n{\"key\":\"y\""), 0o644)
	if list, err := repo.List(ctx, ""); err != nil || len(list) != 1 {
		t.Errorf("list with a leftover temp file: %v, %v", list, err)
	}
	if _, err := NewRepository(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Error("the leftover temp file was not cleared")
	}
}

// damages are the ways an object file of key "x" holding xData can be
// damaged. headerIntact: only the data is damaged, and the object keeps
// the generation its header gives.
var damages = []struct {
	name         string
	damage       func(file []byte) []byte
	headerIntact bool
}{
	{"truncated in the data", func(b []byte) []byte { return b[:len(b)-10] }, true},
	{"a byte of data flipped", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, true},
	{"data appended", func(b []byte) []byte { return append(b, "more"...) }, true},
	{"huge size claimed", func(b []byte) []byte { return replaceHeader(b, `"size":400`, `"size":1099511627776`) }, true},
	{"truncated in the header", func(b []byte) []byte { return b[:len(objectMagic)+20] }, false},
	{"truncated in the magic", func(b []byte) []byte { return b[:4] }, false},
	{"empty", func(b []byte) []byte { return nil }, false},
	{"a byte of header JSON flipped", func(b []byte) []byte { b[len(objectMagic)] ^= 0x40; return b }, false},
	{"a digit of the generation flipped", func(b []byte) []byte {
		i := bytes.Index(b, []byte(`"generation":1,`)) + len(`"generation":`)
		b[i] = '3'
		return b
	}, false},
	{"the header checksum's name flipped", func(b []byte) []byte {
		i := bytes.Index(b, []byte(`"hcrc"`))
		b[i+1] ^= 1
		return b
	}, false},
	{"header replaced by garbage", func(b []byte) []byte {
		return append([]byte(objectMagic+"\x00\xff garbage \x7f\n"), b[bytes.IndexByte(b[len(objectMagic):], '\n')+len(objectMagic)+1:]...)
	}, false},
	{"no end of header", func(b []byte) []byte {
		return append([]byte(objectMagic), bytes.Repeat([]byte("{"), 3*maxHeadBytes)...)
	}, false},
	{"not an object file", func(b []byte) []byte { return []byte("PK\x03\x04 a zip file, say") }, false},
	{"negative size", func(b []byte) []byte { return replaceHeader(b, `"size":400`, `"size":-400`) }, false},
	{"generation zero", func(b []byte) []byte { return replaceHeader(b, `"generation":1,`, `"generation":0,`) }, false},
	{"generation at the end of int64", func(b []byte) []byte {
		return replaceHeader(b, `"generation":1,`, `"generation":9223372036854775807,`)
	}, false},
	{"the key of another file", func(b []byte) []byte { return replaceHeader(b, `"key":"x"`, `"key":"y"`) }, false},
	{"an empty key", func(b []byte) []byte { return replaceHeader(b, `"key":"x"`, `"key":""`) }, false},
}

var xData = bytes.Repeat([]byte("data"), 100)

// replaceHeader replaces old with new in an object file's header line
// and gives the line its right checksum: a header as hostile as a
// well-formed one can be.
func replaceHeader(file []byte, old, new string) []byte {
	end := len(objectMagic) + bytes.IndexByte(file[len(objectMagic):], '\n')
	line := string(file[len(objectMagic):end])
	line = line[:strings.LastIndex(line, `,"hcrc":`)] + "}"
	if !strings.Contains(line, old) {
		panic("no " + old + " in the header " + line)
	}
	line = strings.Replace(line, old, new, 1)
	sum := crc32.Checksum([]byte(line), castagnoli)
	line = line[:len(line)-1] + `,"hcrc":` + strconv.FormatUint(uint64(sum), 10) + "}"
	return append([]byte(objectMagic+line), file[end:]...)
}

// damagedRepo returns a repository, its clock stopped (generations count
// puts), holding an intact object "y" and the object "x" at generation 1
// damaged by damage.
func damagedRepo(t *testing.T, damage func([]byte) []byte) (*Repository, string) {
	t.Helper()
	ctx := context.Background()
	repo, err := NewRepository(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	frozen(repo)
	if _, err := repo.Put(ctx, "x", xData, sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Put(ctx, "y", []byte("intact"), sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(repo.objects(), objectName("x"))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, damage(b), 0o644); err != nil {
		t.Fatal(err)
	}
	return repo, path
}

// TestRepositoryDamage: a damaged object is reported as a data loss
// naming its key and file, never returned; it does not fail a listing,
// and Put and Delete with IfAny replace and remove it.
func TestRepositoryDamage(t *testing.T) {
	t.Parallel()
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			repo, path := damagedRepo(t, d.damage)
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			data, _, err := repo.Get(ctx, "x")
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), `"x"`) || !strings.Contains(err.Error(), path) {
				t.Fatalf("get: %q, %v; want a data loss naming the key and %s", data, err, path)
			}
			// Other tests run alongside: the bound is loose, far below
			// what a header or a size claim could make a read take.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
				t.Errorf("get of a damaged object allocated %d bytes", grew)
			}

			list, err := repo.List(ctx, "")
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			wantGen := int64(0) // unknown
			if d.headerIntact {
				wantGen = 1
			}
			if len(list) != 2 || list[0].Key != "x" || list[0].Generation != wantGen || list[1].Key != "y" || list[1].Generation != 1 {
				t.Fatalf("list = %+v, want x at generation %d and y at 1", list, wantGen)
			}

			// A damaged object exists: IfAbsent fails. Its generation is
			// what its header says when only the data is damaged, else
			// unknown: no generation names it.
			if _, err := repo.Put(ctx, "x", []byte("new"), sdk.IfAbsent); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("put if absent: %v, want a failed precondition", err)
			}
			if !d.headerIntact {
				if _, err := repo.Put(ctx, "x", []byte("new"), 1); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), path) {
					t.Fatalf("put at generation 1: %v, want a failed precondition naming %s", err, path)
				}
				if err := repo.Delete(ctx, "x", 1); !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Fatalf("delete at generation 1: %v, want a failed precondition", err)
				}
			}
			if _, _, err := repo.Get(ctx, "x"); !errors.Is(err, errdefs.ErrDataLoss) {
				t.Fatalf("a refused put or delete changed the damaged object: %v", err)
			}

			gen, err := repo.Put(ctx, "x", []byte("rebuilt"), sdk.IfAny)
			if err != nil || gen <= 0 || d.headerIntact && gen != 2 {
				t.Fatalf("put any over the damaged object: generation %d, %v", gen, err)
			}
			if data, info, err := repo.Get(ctx, "x"); err != nil || string(data) != "rebuilt" || info.Generation != gen {
				t.Fatalf("get after the put: %q %+v %v", data, info, err)
			}

			repo, _ = damagedRepo(t, d.damage)
			if err := repo.Delete(ctx, "x", sdk.IfAny); err != nil {
				t.Fatalf("delete any: %v", err)
			}
			if _, _, err := repo.Get(ctx, "x"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("get after the delete: %v, want not found", err)
			}
			if gen, err := repo.Put(ctx, "x", []byte("again"), sdk.IfAbsent); err != nil || gen <= 0 {
				t.Fatalf("put after the delete: generation %d, %v", gen, err)
			}
		})
	}
}

// TestRepositoryDamageIntactHeader: when only the data is damaged, the
// header's generation stands: a writer holding it replaces or deletes the
// object.
func TestRepositoryDamageIntactHeader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, d := range damages {
		if !d.headerIntact {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			repo, _ := damagedRepo(t, d.damage)
			if gen, err := repo.Put(ctx, "x", []byte("rebuilt"), 1); err != nil || gen != 2 {
				t.Fatalf("put at the header's generation: %d, %v; want 2", gen, err)
			}
			repo, _ = damagedRepo(t, d.damage)
			if err := repo.Delete(ctx, "x", 1); err != nil {
				t.Fatalf("delete at the header's generation: %v", err)
			}
		})
	}
}

// TestRepositoryDamageHashedName: a damaged object stored under a hashed
// name cannot be listed (its key is in no name) but fails nothing.
func TestRepositoryDamageHashedName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	repo, _ := NewRepository(t.TempDir())
	long := strings.Repeat("long/", 60)
	if _, err := repo.Put(ctx, long, []byte("digests"), sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(repo.objects(), objectName(long))
	if err := os.WriteFile(path, []byte(objectMagic+"{torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.Get(ctx, long); !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), path) {
		t.Fatalf("get: %v, want a data loss naming %s", err, path)
	}
	if list, err := repo.List(ctx, "long/"); err != nil || len(list) != 0 {
		t.Fatalf("list: %+v, %v; want nothing", list, err)
	}
	if err := repo.Delete(ctx, long, sdk.IfAny); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the damaged file survived the delete: %v", err)
	}
}

// TestRepositoryStrayFiles: files no put wrote (a person's notes, a
// folder) fail no listing and are not listed.
func TestRepositoryStrayFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	repo, _ := NewRepository(t.TempDir())
	if _, err := repo.Put(ctx, "a", []byte("1"), sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(repo.objects(), "notes.txt"), []byte("do not delete"), 0o644)
	os.WriteFile(filepath.Join(repo.objects(), "%61"), []byte("not a's name: a is not escaped"), 0o644)
	os.Mkdir(filepath.Join(repo.objects(), "b"), 0o755)
	list, err := repo.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key != "a" || list[1].Key != "b" || list[1].Generation != 0 {
		t.Fatalf("list = %+v, want a and b (a folder where b's file goes: damaged)", list)
	}
	if _, _, err := repo.Get(ctx, "b"); !errors.Is(err, errdefs.ErrDataLoss) {
		t.Fatalf("get of a folder: %v, want a data loss", err)
	}
}

// TestRepositoryEveryBitFlip: a bit flipped anywhere in an object file,
// magic, header or data, makes it a data loss.
func TestRepositoryEveryBitFlip(t *testing.T) {
	t.Parallel()
	repo, err := NewRepository(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Put(context.Background(), "replicas/web-01/seg/7", []byte("digests"), sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(repo.objects(), objectName("replicas/web-01/seg/7"))
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range good {
		for bit := range 8 {
			if _, err := f.WriteAt([]byte{good[i] ^ 1<<bit}, int64(i)); err != nil {
				t.Fatal(err)
			}
			if h, data, err := readObject(path, true); !errors.Is(err, errdefs.ErrDataLoss) {
				t.Errorf("bit %d of byte %d (%q) flipped: %+v %q %v; want a data loss", bit, i, good[i], h, data, err)
			}
		}
		if _, err := f.WriteAt(good[i:i+1], int64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRepositoryOldHeader: object files written before headers had a
// checksum still read, and one holding a member unknown then is damaged
// (it may be a checksummed header whose "hcrc" lost its name).
func TestRepositoryOldHeader(t *testing.T) {
	t.Parallel()
	repo, err := NewRepository(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("digests")
	header := fmt.Sprintf(`{"key":"k","generation":5,"size":7,"crc32c":%d,"modified":"2026-01-01T00:00:00Z"`, crc32.Checksum(data, castagnoli))
	path := filepath.Join(repo.objects(), "k")
	os.WriteFile(path, append([]byte(objectMagic+header+"}\n"), data...), 0o644)
	if got, info, err := repo.Get(context.Background(), "k"); err != nil || string(got) != "digests" || info.Generation != 5 {
		t.Fatalf("get of an old object: %q %+v %v", got, info, err)
	}
	os.WriteFile(path, append([]byte(objectMagic+header+`,"hcrb":12345}`+"\n"), data...), 0o644)
	if _, _, err := repo.Get(context.Background(), "k"); !errors.Is(err, errdefs.ErrDataLoss) {
		t.Fatalf("get of an unchecked header with an unknown member: %v, want a data loss", err)
	}
}

func TestRepositoryKeyLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	repo, _ := NewRepository(t.TempDir())
	// The worst case: every byte is written as \u00XX in the header.
	key := strings.Repeat("\x01", maxKeyBytes)
	if _, err := repo.Put(ctx, key, []byte("x"), sdk.IfAbsent); err != nil {
		t.Fatalf("put with a key of %d bytes: %v", len(key), err)
	}
	if _, _, err := repo.Get(ctx, key); err != nil {
		t.Fatalf("get with a key of %d bytes: %v", len(key), err)
	}
	if _, err := repo.Put(ctx, key+"x", []byte("x"), sdk.IfAbsent); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("put with a key of %d bytes: %v, want invalid argument", len(key)+1, err)
	}
}

func TestUnescapeName(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"a", "a/b", "..", "~x", "日本/語", "a%2Fb", "-_", strings.Repeat("x", maxEscapedKey)} {
		if got, ok := unescapeName(objectName(key)); !ok || got != key {
			t.Errorf("unescapeName(%q) = %q, %v; want %q", objectName(key), got, ok, key)
		}
	}
	for _, name := range []string{"", "%2f", "%41", "a.b", "%4", "%zz", "%", "%FF", objectName(strings.Repeat("x", maxEscapedKey+1)), "~" + strings.Repeat("0", 64)} {
		if key, ok := unescapeName(name); ok {
			t.Errorf("unescapeName(%q) = %q, want no key", name, key)
		}
	}
}

// FuzzReadObject: whatever an object file holds, reading it returns the
// object its header describes or a data loss, and never panics.
func FuzzReadObject(f *testing.F) {
	repo := &Repository{now: func() time.Time { return time.Unix(1, 0) }}
	good := repo.encode(&objectHeader{Key: "k", Generation: 7, Size: 4, CRC32C: crc32.Checksum([]byte("data"), castagnoli)}, []byte("data"))
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte(objectMagic))
	f.Add([]byte(objectMagic + "{\"key\":\"k\",\"generation\":1,\"size\":1099511627776}\n"))
	f.Add([]byte(objectMagic + "{\"key\":\"k\",\"generation\":3,\"deleted\":true}\n"))
	f.Add([]byte(objectMagic + "{\"key\":\"k\",\"generation\":1,\"size\":-1}\n"))
	f.Fuzz(func(t *testing.T, file []byte) {
		path := filepath.Join(t.TempDir(), "k")
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, withData := range []bool{false, true} {
			h, data, err := readObject(path, withData)
			if err != nil {
				if !errors.Is(err, errdefs.ErrDataLoss) {
					t.Fatalf("readObject: %v, want a data loss", err)
				}
				continue
			}
			if h.Key != "k" || h.Generation <= 0 || h.Size < 0 {
				t.Fatalf("readObject accepted the header %+v", h)
			}
			if withData && !h.Deleted && (int64(len(data)) != h.Size || crc32.Checksum(data, castagnoli) != h.CRC32C) {
				t.Fatalf("readObject returned %d bytes that do not match the header %+v", len(data), h)
			}
		}
	})
}

// TestRepositoryPutRacesItsTemporaryFile covers what can happen between a
// put writing its file outside the lock and renaming it under the lock:
// another writer changes the key (the file carries a stale generation and
// must be written again), or another process opens the repository and
// clears temporary files (the file is gone and must be written again).
func TestRepositoryPutRacesItsTemporaryFile(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	a, b := twoFrozen(t, root)
	if _, err := a.Put(ctx, "k", []byte("v1"), sdk.IfAbsent); err != nil {
		t.Fatal(err)
	}

	// b puts the key while a's put of it waits for the lock: a's
	// unconditional put lands on top, at the next generation.
	a.prepared = func(string) {
		if _, err := b.Put(ctx, "k", []byte("from b"), sdk.IfAny); err != nil {
			t.Error(err)
		}
	}
	gen, err := a.Put(ctx, "k", []byte("from a"), sdk.IfAny)
	if err != nil || gen != 3 {
		t.Fatalf("put after a concurrent put: generation %d, %v; want 3", gen, err)
	}
	if data, info, err := b.Get(ctx, "k"); err != nil || string(data) != "from a" || info.Generation != 3 {
		t.Fatalf("get: %q generation %d %v; want \"from a\" at 3", data, info.Generation, err)
	}

	// A compare-and-swap against the generation a saw before b's put
	// loses, and leaves b's object.
	a.prepared = func(string) {
		if _, err := b.Put(ctx, "k", []byte("b again"), 3); err != nil {
			t.Error(err)
		}
	}
	if _, err := a.Put(ctx, "k", []byte("stale"), 3); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("stale compare-and-swap: %v, want a failed precondition", err)
	}
	if data, _, _ := b.Get(ctx, "k"); string(data) != "b again" {
		t.Fatalf("after the lost race the object holds %q", data)
	}

	// Another process opens the repository and clears temporary files.
	a.prepared = func(string) {
		if _, err := NewRepository(root); err != nil {
			t.Error(err)
		}
	}
	if _, err := a.Put(ctx, "k", []byte("after a clear"), sdk.IfAny); err != nil {
		t.Fatalf("put whose temporary file was cleared: %v", err)
	}
	if err := a.Delete(ctx, "k", sdk.IfAny); err != nil {
		t.Fatalf("delete whose temporary file was cleared: %v", err)
	}
	if _, _, err := b.Get(ctx, "k"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v, want not found", err)
	}
	a.prepared = nil
	left, err := os.ReadDir(filepath.Join(root, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// twoFrozen opens two repositories on one folder (two processes, as far
// as the flock is concerned), their clocks stopped.
func twoFrozen(t *testing.T, root string) (*Repository, *Repository) {
	t.Helper()
	a, err := NewRepository(root)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRepository(root)
	if err != nil {
		t.Fatal(err)
	}
	frozen(a)
	frozen(b)
	return a, b
}

// frozen stops repo's clock at the epoch: generations then count puts,
// and every delete must raise the floor.
func frozen(repo *Repository) {
	repo.now = func() time.Time { return time.Unix(0, 0) }
}

// TestRepositoryDeleteLeavesNothing: deleting removes the object's file
// and, with a clock that runs, writes nothing else; a key put again goes
// on above its old generations, from the clock or from the floor when the
// clock is behind; the tombstone files older versions left are folded
// into the floor when the repository is opened.
func TestRepositoryDeleteLeavesNothing(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	repo, err := NewRepository(root)
	if err != nil {
		t.Fatal(err)
	}
	floorBefore, _ := os.ReadFile(filepath.Join(root, floorFile))
	var last int64
	for i := range 20 {
		key := "seg/" + strconv.Itoa(i%3)
		gen, err := repo.Put(ctx, key, []byte("digests"), sdk.IfAbsent)
		if err != nil {
			t.Fatal(err)
		}
		if gen <= last {
			t.Fatalf("put %d: generation %d after %d", i, gen, last)
		}
		last = gen
		if err := repo.Delete(ctx, key, gen); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "objects")); len(entries) != 0 {
		t.Fatalf("%d files left in objects after every object was deleted", len(entries))
	}
	if floorAfter, _ := os.ReadFile(filepath.Join(root, floorFile)); !bytes.Equal(floorAfter, floorBefore) {
		t.Fatalf("deletes with a running clock rewrote the floor: %s", floorAfter)
	}

	// The clock goes back: the floor keeps generations going up.
	gen, _ := repo.Put(ctx, "k", []byte("x"), sdk.IfAbsent)
	frozen(repo)
	if err := repo.Delete(ctx, "k", gen); err != nil {
		t.Fatal(err)
	}
	if again, err := repo.Put(ctx, "k", []byte("y"), sdk.IfAbsent); err != nil || again <= gen {
		t.Fatalf("put after a delete with the clock behind: generation %d, %v; want above %d", again, err, gen)
	}
	repo.Delete(ctx, "k", sdk.IfAny)

	// A tombstone as an older version wrote it, and no floor yet.
	os.Remove(filepath.Join(root, floorFile))
	tomb := objectMagic + `{"key":"old/key","generation":9,"size":0,"crc32c":0,"modified":"2026-01-01T00:00:00Z","deleted":true}` + "\n"
	if err := os.WriteFile(filepath.Join(root, "objects", objectName("old/key")), []byte(tomb), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.Get(ctx, "old/key"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get of a tombstone: %v, want not found", err)
	}
	if repo, err = NewRepository(root); err != nil {
		t.Fatal(err)
	}
	frozen(repo)
	if entries, _ := os.ReadDir(filepath.Join(root, "objects")); len(entries) != 0 {
		t.Fatalf("the tombstone survived opening: %d files", len(entries))
	}
	gen, err = repo.Put(ctx, "old/key", []byte("back"), sdk.IfAbsent)
	if err != nil || gen != 10 {
		t.Fatalf("put after the fold: generation %d, %v; want 10 (above the tombstone's 9)", gen, err)
	}
	if _, err := repo.Put(ctx, "old/key", []byte("stale"), 9); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("put with the deleted object's generation: %v, want a failed precondition", err)
	}
	// Opening again keeps the floor.
	if repo, err = NewRepository(root); err != nil {
		t.Fatal(err)
	}
	frozen(repo)
	if err := repo.Delete(ctx, "old/key", 10); err != nil {
		t.Fatal(err)
	}
	if gen, err := repo.Put(ctx, "old/key", []byte("again"), sdk.IfAbsent); err != nil || gen != 11 {
		t.Fatalf("put after delete: generation %d, %v; want 11", gen, err)
	}
}
