package sdktest

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

// MemRepository is an in-memory sdk.Repository. Generations come from one
// counter for the whole repository, so a key that is deleted and created
// again never reuses a generation a stale writer may still hold. It passes
// RunRepository and serves core tests that need a repository.
//
// It is safe for concurrent use. Set Clock before first use to control the
// times it reports. Damage makes an object damaged, as failing storage
// would.
type MemRepository struct {
	// Clock gives the modification time of objects; nil means time.Now.
	Clock func() time.Time

	mu      sync.Mutex
	objects map[string]memObject
	lastGen int64
}

var _ sdk.Repository = (*MemRepository)(nil)

type memObject struct {
	data    []byte
	info    sdk.ObjectInfo
	damaged bool
}

// NewMemRepository returns an empty repository.
func NewMemRepository() *MemRepository {
	return &MemRepository{objects: map[string]memObject{}}
}

func (r *MemRepository) now() time.Time {
	if r.Clock != nil {
		return r.Clock()
	}
	return time.Now()
}

// precondition reports whether an object (ok: it exists) meets ifGeneration.
func precondition(key string, obj memObject, ok bool, ifGeneration int64) error {
	switch {
	case ifGeneration == sdk.IfAny:
		return nil
	case ok && obj.damaged:
		return fmt.Errorf("object %q is damaged, at no generation one can name: %w", key, errdefs.ErrFailedPrecondition)
	case ifGeneration == sdk.IfAbsent && ok:
		return fmt.Errorf("object %q exists (generation %d): %w", key, obj.info.Generation, errdefs.ErrFailedPrecondition)
	case ifGeneration == sdk.IfAbsent:
		return nil
	case !ok:
		return fmt.Errorf("object %q does not exist, want generation %d: %w", key, ifGeneration, errdefs.ErrFailedPrecondition)
	case obj.info.Generation != ifGeneration:
		return fmt.Errorf("object %q is at generation %d, want %d: %w", key, obj.info.Generation, ifGeneration, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (r *MemRepository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if key == "" {
		return 0, fmt.Errorf("put: empty key: %w", errdefs.ErrInvalidArgument)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, ok := r.objects[key]
	if err := precondition(key, obj, ok, ifGeneration); err != nil {
		return 0, err
	}
	r.lastGen++
	r.objects[key] = memObject{
		data: append([]byte(nil), data...),
		info: sdk.ObjectInfo{Key: key, Generation: r.lastGen, Size: int64(len(data)), Modified: r.now()},
	}
	return r.lastGen, nil
}

func (r *MemRepository) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, sdk.ObjectInfo{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, ok := r.objects[key]
	if !ok {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q: %w", key, errdefs.ErrNotFound)
	}
	if obj.damaged {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q: damaged: %w", key, errdefs.ErrDataLoss)
	}
	return append([]byte(nil), obj.data...), obj.info, nil
}

func (r *MemRepository) List(ctx context.Context, prefix string) ([]sdk.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sdk.ObjectInfo
	for key, obj := range r.objects {
		if strings.HasPrefix(key, prefix) {
			out = append(out, obj.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Damage makes the object key damaged, if there is one: Get reports it as
// errdefs.ErrDataLoss until a Put or Delete with sdk.IfAny replaces or
// removes it, and no other condition matches it.
func (r *MemRepository) Damage(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if obj, ok := r.objects[key]; ok {
		obj.damaged = true
		r.objects[key] = obj
	}
}

func (r *MemRepository) Delete(ctx context.Context, key string, ifGeneration int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, ok := r.objects[key]
	if ifGeneration == sdk.IfAbsent {
		return fmt.Errorf("delete %q: generation 0 names no object: %w", key, errdefs.ErrInvalidArgument)
	}
	if err := precondition(key, obj, ok, ifGeneration); err != nil {
		return err
	}
	delete(r.objects, key)
	return nil
}
