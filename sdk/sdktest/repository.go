package sdktest

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// RepositoryFixture is what a plugin author provides to run RunRepository.
type RepositoryFixture struct {
	// New returns the repository under test, configured and ready. The
	// suite calls it once per check with that check's t. It may return the
	// same instance every time, but the Stop check, which runs last, stops
	// what it gets. Every check works under keys of its own, so a
	// repository that holds other objects is fine.
	New func(t *testing.T) sdk.Repository
	// Deadline is how long a call with a cancelled context, or Stop, may
	// take to return. Zero means 10 seconds.
	Deadline time.Duration
	// Damage damages the stored object key behind the repository's back,
	// as failing storage would (a torn or overwritten file, a flipped
	// bit), so that the repository's checks find it. Nil skips the
	// Damaged check.
	Damage func(t *testing.T, key string)
}

// RunRepository runs the conformance checks of a Repository, each as a
// subtest of t. See the package documentation for the list.
func RunRepository(t *testing.T, fx RepositoryFixture) {
	if fx.New == nil {
		t.Fatal("sdktest: RepositoryFixture needs New")
	}
	checks := []struct {
		name string
		run  func(c *repoCheck, t *testing.T)
	}{
		{"RoundTrip", (*repoCheck).roundTrip},
		{"GetMissing", (*repoCheck).getMissing},
		{"IfAbsent", (*repoCheck).ifAbsent},
		{"GenerationGrows", (*repoCheck).generationGrows},
		{"CASStale", (*repoCheck).casStale},
		{"CASMissing", (*repoCheck).casMissing},
		{"CASRace", (*repoCheck).casRace},
		{"DeleteWrongGeneration", (*repoCheck).deleteWrongGeneration},
		{"DeleteMissing", (*repoCheck).deleteMissing},
		{"ListPrefix", (*repoCheck).listPrefix},
		{"EmptyObject", (*repoCheck).emptyObject},
		{"LargeObject", (*repoCheck).largeObject},
		{"AtomicPut", (*repoCheck).atomicPut},
		{"Damaged", (*repoCheck).damaged},
		{"Located", (*repoCheck).located},
		{"Cancel", (*repoCheck).cancel},
		{"Stop", func(c *repoCheck, t *testing.T) { checkStop(t, c.repo, c.deadline) }},
	}
	for _, check := range checks {
		t.Run(check.name, func(t *testing.T) {
			rng := newRand(t)
			c := &repoCheck{ctx: t.Context(), rng: rng, deadline: deadlineOr(fx.Deadline), prefix: uniqueName(rng, "repo") + "/", damage: fx.Damage}
			c.repo = fx.New(t)
			t.Cleanup(func() { c.cleanup(t) })
			check.run(c, t)
		})
	}
}

// repoCheck is the state of one check of RunRepository; it works under
// keys that start with prefix.
type repoCheck struct {
	repo     sdk.Repository
	ctx      context.Context
	rng      *rand.Rand
	deadline time.Duration
	prefix   string
	damage   func(t *testing.T, key string)
}

// cleanup deletes what the check left under its prefix.
func (c *repoCheck) cleanup(t *testing.T) {
	ctx, cancel := cleanupContext()
	defer cancel()
	objs, err := c.repo.List(ctx, c.prefix)
	if err != nil {
		return // a stopped repository cannot be cleaned, and need not be
	}
	for _, o := range objs {
		if err := c.repo.Delete(ctx, o.Key, sdk.IfAny); err != nil {
			t.Errorf("clean up %q: %v", o.Key, err)
		}
	}
}

func (c *repoCheck) put(t *testing.T, key string, data []byte, ifGen int64) int64 {
	t.Helper()
	gen, err := c.repo.Put(c.ctx, key, data, ifGen)
	if err != nil {
		t.Fatalf("Put(%q, %d bytes, if generation %d): %v", key, len(data), ifGen, err)
	}
	return gen
}

// want checks that key holds data at generation gen.
func (c *repoCheck) want(t *testing.T, key string, data []byte, gen int64) {
	t.Helper()
	got, info, err := c.repo.Get(c.ctx, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if msg := diffBytes(got, data, 0); msg != "" {
		t.Errorf("Get(%q): %s", key, msg)
	}
	if info.Key != key || info.Generation != gen || info.Size != int64(len(data)) {
		t.Errorf("Get(%q) info = %+v, want key %q, generation %d, size %d", key, info, key, gen, len(data))
	}
}

func (c *repoCheck) roundTrip(t *testing.T) {
	key := c.prefix + "object"
	data := randomBytes(c.rng, 1000)
	gen := c.put(t, key, data, sdk.IfAbsent)
	if gen < 1 {
		t.Errorf("the first Put returned generation %d, want at least 1", gen)
	}
	c.want(t, key, data, gen)
	objs, err := c.repo.List(c.ctx, c.prefix)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != 1 || objs[0].Key != key || objs[0].Generation != gen || objs[0].Size != int64(len(data)) {
		t.Errorf("List(%q) = %+v, want only %q at generation %d with %d bytes", c.prefix, objs, key, gen, len(data))
	}
	if err := c.repo.Delete(c.ctx, key, gen); err != nil {
		t.Fatalf("Delete(%q, generation %d): %v", key, gen, err)
	}
	_, _, err = c.repo.Get(c.ctx, key)
	wantClass(t, "Get after Delete", err, errdefs.ErrNotFound)
}

// located checks what an sdk.ObjectLocator says of an object: its data
// lies whole where it says, with the checksum it gives.
func (c *repoCheck) located(t *testing.T) {
	loc, ok := c.repo.(sdk.ObjectLocator)
	if !ok {
		t.Skip("the repository is no sdk.ObjectLocator")
	}
	key := c.prefix + "located"
	data := randomBytes(c.rng, 3000)
	gen := c.put(t, key, data, sdk.IfAbsent)
	of, err := loc.LocateObject(c.ctx, key)
	if err != nil {
		t.Fatalf("LocateObject(%q): %v", key, err)
	}
	if of.Info.Key != key || of.Info.Generation != gen || of.Info.Size != int64(len(data)) {
		t.Errorf("LocateObject(%q) describes %+v, want generation %d of %d bytes", key, of.Info, gen, len(data))
	}
	f, err := os.Open(of.Path)
	if err != nil {
		t.Fatalf("open the file LocateObject named: %v", err)
	}
	defer f.Close()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, of.Offset); err != nil || !bytes.Equal(got, data) {
		t.Errorf("%d bytes at %d of %s differ from the object (%v)", len(data), of.Offset, of.Path, err)
	}
	if sum := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)); of.CRC32C != sum {
		t.Errorf("LocateObject gives CRC-32C %08x, the data's is %08x", of.CRC32C, sum)
	}
	_, err = loc.LocateObject(c.ctx, c.prefix+"missing")
	wantClass(t, "LocateObject of a missing key", err, errdefs.ErrNotFound)
}

func (c *repoCheck) getMissing(t *testing.T) {
	_, _, err := c.repo.Get(c.ctx, c.prefix+"missing")
	wantClass(t, "Get of a missing key", err, errdefs.ErrNotFound)
}

func (c *repoCheck) ifAbsent(t *testing.T) {
	key := c.prefix + "if-absent"
	data := []byte("first")
	gen := c.put(t, key, data, sdk.IfAbsent)
	_, err := c.repo.Put(c.ctx, key, []byte("second"), sdk.IfAbsent)
	wantClass(t, "Put IfAbsent over an existing object", err, errdefs.ErrFailedPrecondition)
	c.want(t, key, data, gen)
}

func (c *repoCheck) generationGrows(t *testing.T) {
	key := c.prefix + "generations"
	last := c.put(t, key, []byte("0"), sdk.IfAbsent)
	for i := 1; i <= 5; i++ {
		ifGen := last
		if i%2 == 0 {
			ifGen = sdk.IfAny
		}
		gen := c.put(t, key, []byte(strconv.Itoa(i)), ifGen)
		if gen <= last {
			t.Fatalf("Put %d returned generation %d after %d; generations must grow", i, gen, last)
		}
		last = gen
	}
	c.want(t, key, []byte("5"), last)
}

func (c *repoCheck) casStale(t *testing.T) {
	key := c.prefix + "cas"
	g1 := c.put(t, key, []byte("v1"), sdk.IfAbsent)
	g2 := c.put(t, key, []byte("v2"), g1)
	_, err := c.repo.Put(c.ctx, key, []byte("v3"), g1)
	wantClass(t, "Put with a stale generation", err, errdefs.ErrFailedPrecondition)
	c.want(t, key, []byte("v2"), g2)
}

func (c *repoCheck) casMissing(t *testing.T) {
	key := c.prefix + "cas-missing"
	_, err := c.repo.Put(c.ctx, key, []byte("v"), 7)
	wantClass(t, "Put with a generation on a missing key", err, errdefs.ErrFailedPrecondition)
	_, _, err = c.repo.Get(c.ctx, key)
	wantClass(t, "Get after a failed Put", err, errdefs.ErrNotFound)
}

// casRace has goroutines increment one counter with compare-and-swap: the
// count comes out exact only if every lost race is reported.
func (c *repoCheck) casRace(t *testing.T) {
	const workers, each = 16, 8
	key := c.prefix + "counter"
	c.put(t, key, []byte("0"), sdk.IfAbsent)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for range each {
				if err := c.increment(key); err != nil {
					t.Errorf("goroutine %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	data, _, err := c.repo.Get(c.ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got := string(data); got != strconv.Itoa(workers*each) {
		t.Errorf("%d goroutines incremented a counter %d times each: it reads %s, want %d", workers, each, got, workers*each)
	}
}

func (c *repoCheck) increment(key string) error {
	for range 10_000 {
		data, info, err := c.repo.Get(c.ctx, key)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(data))
		if err != nil {
			return err
		}
		_, err = c.repo.Put(c.ctx, key, []byte(strconv.Itoa(n+1)), info.Generation)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
	}
	return errors.New("no increment won in 10000 tries")
}

func (c *repoCheck) deleteWrongGeneration(t *testing.T) {
	key := c.prefix + "delete"
	gen := c.put(t, key, []byte("keep"), sdk.IfAbsent)
	err := c.repo.Delete(c.ctx, key, gen+1000)
	wantClass(t, "Delete with a wrong generation", err, errdefs.ErrFailedPrecondition)
	c.want(t, key, []byte("keep"), gen)
	gen2 := c.put(t, key, []byte("newer"), gen)
	err = c.repo.Delete(c.ctx, key, gen)
	wantClass(t, "Delete with a stale generation", err, errdefs.ErrFailedPrecondition)
	c.want(t, key, []byte("newer"), gen2)
}

// damaged damages an object and wants it reported as a data loss, never
// returned; it must block nothing: the objects beside it are listed, and
// Put and Delete with IfAny replace and remove it. It counts as existing,
// so IfAbsent fails.
func (c *repoCheck) damaged(t *testing.T) {
	if c.damage == nil {
		t.Skip("RepositoryFixture.Damage is nil: damaged objects are not checked")
	}
	key, beside := c.prefix+"damaged", c.prefix+"beside"
	gen := c.put(t, key, []byte("metadata that storage will damage"), sdk.IfAbsent)
	besideGen := c.put(t, beside, []byte("intact"), sdk.IfAbsent)
	c.damage(t, key)
	data, _, err := c.repo.Get(c.ctx, key)
	wantClass(t, "Get of a damaged object", err, errdefs.ErrDataLoss)
	if err == nil {
		t.Fatalf("Get of a damaged object returned %q", data)
	}
	objs, err := c.repo.List(c.ctx, c.prefix)
	if err != nil {
		t.Fatalf("List beside a damaged object: %v", err)
	}
	listed := false
	for _, o := range objs {
		switch o.Key {
		case beside:
			listed = o.Generation == besideGen
		case key: // listing the damaged object is allowed, not required
		default:
			t.Errorf("List beside a damaged object: unexpected key %q", o.Key)
		}
	}
	if !listed {
		t.Errorf("List beside a damaged object = %+v, want %q at generation %d", objs, beside, besideGen)
	}
	_, err = c.repo.Put(c.ctx, key, []byte("x"), sdk.IfAbsent)
	wantClass(t, "Put with IfAbsent over a damaged object", err, errdefs.ErrFailedPrecondition)
	newGen := c.put(t, key, []byte("rebuilt"), sdk.IfAny)
	if newGen <= gen {
		t.Errorf("Put with IfAny over a damaged object at generation %d gave generation %d", gen, newGen)
	}
	c.want(t, key, []byte("rebuilt"), newGen)
	c.damage(t, key)
	if err := c.repo.Delete(c.ctx, key, sdk.IfAny); err != nil {
		t.Fatalf("Delete with IfAny of a damaged object: %v", err)
	}
	_, _, err = c.repo.Get(c.ctx, key)
	wantClass(t, "Get after Delete of a damaged object", err, errdefs.ErrNotFound)
}

func (c *repoCheck) deleteMissing(t *testing.T) {
	if err := c.repo.Delete(c.ctx, c.prefix+"missing", sdk.IfAny); err != nil {
		t.Errorf("Delete of a missing key with IfAny: %v, want success", err)
	}
}

// listPrefix stores keys with separators and odd characters, some just
// outside the prefix listed, and wants exactly the right ones, sorted.
func (c *repoCheck) listPrefix(t *testing.T) {
	names := []string{
		"a", "a/b", "a/b/c", "a/", "a b", "a%2Fb", "a+b", "a.b", "a-", "a..", "aa", "a~", "a\\b",
		"äöü/ß", "a/日本", "A", "b", "x/", "#?&=", "a/b/c/d/e/f/g/h",
	}
	sizes := map[string]int64{}
	for i, n := range names {
		key := c.prefix + n
		data := randomBytes(c.rng, i)
		c.put(t, key, data, sdk.IfAbsent)
		sizes[key] = int64(len(data))
	}
	for _, p := range []string{"", "a", "a/", "a/b", "ä", "x/", "no-such-prefix"} {
		prefix := c.prefix + p
		var want []string
		for _, n := range names {
			if strings.HasPrefix(c.prefix+n, prefix) {
				want = append(want, c.prefix+n)
			}
		}
		sort.Strings(want)
		objs, err := c.repo.List(c.ctx, prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		got := make([]string, len(objs))
		for i, o := range objs {
			got[i] = o.Key
			if o.Size != sizes[o.Key] {
				t.Errorf("List(%q): %q has size %d, want %d", prefix, o.Key, o.Size, sizes[o.Key])
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q (exactly the keys with the prefix, in byte order)", prefix, got, want)
		}
	}
}

func (c *repoCheck) emptyObject(t *testing.T) {
	key := c.prefix + "empty"
	gen := c.put(t, key, nil, sdk.IfAbsent)
	c.want(t, key, nil, gen)
}

// largeObject stores an object much larger than one gRPC message.
func (c *repoCheck) largeObject(t *testing.T) {
	key := c.prefix + "large"
	data := randomBytes(c.rng, 20<<20+12345)
	gen := c.put(t, key, data, sdk.IfAbsent)
	c.want(t, key, data, gen)
	data2 := randomBytes(c.rng, 5<<20+1)
	gen2 := c.put(t, key, data2, gen)
	c.want(t, key, data2, gen2)
}

// atomicPut reads an object while it is replaced: every read must see one
// whole version, never a mix or a part.
func (c *repoCheck) atomicPut(t *testing.T) {
	key := c.prefix + "atomic"
	versions := [][]byte{bytes.Repeat([]byte{'A'}, 1<<20), bytes.Repeat([]byte{'B'}, 1<<20+333)}
	c.put(t, key, versions[0], sdk.IfAbsent)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				data, info, err := c.repo.Get(c.ctx, key)
				if err != nil {
					t.Errorf("reader %d: Get: %v", g, err)
					return
				}
				if !bytes.Equal(data, versions[0]) && !bytes.Equal(data, versions[1]) {
					t.Errorf("reader %d: read %d bytes that are neither version (first byte %q)", g, len(data), data[:min(1, len(data))])
					return
				}
				if info.Size != int64(len(data)) {
					t.Errorf("reader %d: info says %d bytes, read %d", g, info.Size, len(data))
					return
				}
			}
		})
	}
	for i := range 8 {
		c.put(t, key, versions[(i+1)%2], sdk.IfAny)
	}
	close(done)
	wg.Wait()
}

func (c *repoCheck) cancel(t *testing.T) {
	key := c.prefix + "cancel"
	data := randomBytes(c.rng, 100)
	c.put(t, key, data, sdk.IfAbsent)
	fresh := c.prefix + "cancel-put"
	calls := []struct {
		what string
		call func(ctx context.Context) error
	}{
		{"Put", func(ctx context.Context) error { _, err := c.repo.Put(ctx, fresh, data, sdk.IfAbsent); return err }},
		{"Get", func(ctx context.Context) error { _, _, err := c.repo.Get(ctx, key); return err }},
		{"List", func(ctx context.Context) error { _, err := c.repo.List(ctx, c.prefix); return err }},
		{"Delete", func(ctx context.Context) error { return c.repo.Delete(ctx, key, sdk.IfAny) }},
	}
	for _, call := range calls {
		expectCanceled(t, c.deadline, call.what, call.call)
	}
	// A cancelled put is atomic too: the object is whole or absent.
	got, _, err := c.repo.Get(c.ctx, fresh)
	if err == nil && !bytes.Equal(got, data) {
		t.Errorf("a cancelled Put left %d bytes that are not what it was given", len(got))
	} else if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after a cancelled Put: %v", err)
	}
}
