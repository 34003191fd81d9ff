package skeleton

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Repository keeps objects in memory. It implements sdk.Repository, whose
// method comments are the contract, and sdk.Stopper.
//
// Every method is safe for concurrent use: ferry calls a plugin from many
// goroutines at once. One mutex is enough here; a repository on remote
// storage would instead use the storage's own conditional writes (an
// If-Match header, a transaction) to get compare-and-swap.
type Repository struct {
	maxObjectBytes int64

	mu      sync.Mutex
	objects map[string]object
	lastGen int64 // generations come from one counter, so they are never reused
	stopped bool
}

// The compiler checks that Repository keeps the contracts it claims.
var (
	_ sdk.Repository = (*Repository)(nil)
	_ sdk.Stopper    = (*Repository)(nil)
)

type object struct {
	data     []byte
	gen      int64
	modified time.Time
}

// NewRepository returns an empty repository that refuses objects larger
// than maxObjectBytes.
func NewRepository(maxObjectBytes int64) *Repository {
	return &Repository{maxObjectBytes: maxObjectBytes, objects: map[string]object{}}
}

// begin starts a call: it honours cancellation and refuses calls after
// Stop. It returns with r.mu held.
func (r *Repository) begin(ctx context.Context) error {
	// A call whose caller gave up must not go on. Return the context's
	// error; the SDK carries it across the wire as errdefs.ErrCanceled.
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		// Errors wrap one of the errdefs classes so the host can tell what
		// happened with errors.Is, on its side of the wire.
		return fmt.Errorf("skeleton repository: stopped: %w", errdefs.ErrUnavailable)
	}
	return nil
}

// check compares an object's generation with what a caller expects.
func check(key string, obj object, exists bool, ifGeneration int64) error {
	switch {
	case ifGeneration == sdk.IfAny:
		return nil
	case ifGeneration == sdk.IfAbsent && !exists:
		return nil
	case exists && obj.gen == ifGeneration:
		return nil
	case exists:
		return fmt.Errorf("object %q is at generation %d, not %d: %w", key, obj.gen, ifGeneration, errdefs.ErrFailedPrecondition)
	default:
		return fmt.Errorf("object %q does not exist: %w", key, errdefs.ErrFailedPrecondition)
	}
}

// Put stores data under key when ifGeneration matches. The check and the
// write happen under one lock, which is what makes it a compare-and-swap.
func (r *Repository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	if key == "" {
		return 0, fmt.Errorf("put: empty key: %w", errdefs.ErrInvalidArgument)
	}
	if int64(len(data)) > r.maxObjectBytes {
		return 0, fmt.Errorf("put %q: %d bytes is more than max_object_bytes (%d): %w", key, len(data), r.maxObjectBytes, errdefs.ErrInvalidArgument)
	}
	if err := r.begin(ctx); err != nil {
		return 0, err
	}
	defer r.mu.Unlock()
	obj, exists := r.objects[key]
	if err := check(key, obj, exists, ifGeneration); err != nil {
		return 0, err
	}
	r.lastGen++
	// Keep a copy: the caller owns data and may reuse it.
	r.objects[key] = object{data: append([]byte(nil), data...), gen: r.lastGen, modified: time.Now()}
	return r.lastGen, nil
}

// Get returns a copy of an object, or an error of class ErrNotFound.
func (r *Repository) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	if err := r.begin(ctx); err != nil {
		return nil, sdk.ObjectInfo{}, err
	}
	defer r.mu.Unlock()
	obj, ok := r.objects[key]
	if !ok {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q: %w", key, errdefs.ErrNotFound)
	}
	return append([]byte(nil), obj.data...), info(key, obj), nil
}

// List returns the objects under prefix, sorted by key as the contract
// asks (byte order, which is what sort.Strings gives).
func (r *Repository) List(ctx context.Context, prefix string) ([]sdk.ObjectInfo, error) {
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	var out []sdk.ObjectInfo
	for key, obj := range r.objects {
		if strings.HasPrefix(key, prefix) {
			out = append(out, info(key, obj))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes an object when ifGeneration matches; deleting a missing
// object with IfAny succeeds.
func (r *Repository) Delete(ctx context.Context, key string, ifGeneration int64) error {
	if err := r.begin(ctx); err != nil {
		return err
	}
	defer r.mu.Unlock()
	obj, exists := r.objects[key]
	if !exists && ifGeneration == sdk.IfAny {
		return nil
	}
	if ifGeneration == sdk.IfAbsent || !exists {
		return fmt.Errorf("delete %q: no object at generation %d: %w", key, ifGeneration, errdefs.ErrFailedPrecondition)
	}
	if err := check(key, obj, exists, ifGeneration); err != nil {
		return err
	}
	delete(r.objects, key)
	return nil
}

// Stop releases what the repository holds. ferry calls it before it ends
// the plugin; it must return before ctx's deadline.
func (r *Repository) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.objects = nil
	return nil
}

func info(key string, obj object) sdk.ObjectInfo {
	return sdk.ObjectInfo{Key: key, Generation: obj.gen, Size: int64(len(obj.data)), Modified: obj.modified}
}
