package local

import "sync"

// The data paths (a replica disk's pending writes and the old blocks they
// save, the merges of snapshot layers, the folds of restore points) keep
// their data in slabs of slabSize bytes taken from one pool: a batch takes
// the slabs it fills and gives them back once applied, so a run allocates
// no fresh memory per write or batch, a small run takes few slabs, and the
// memory of every path is bounded in bytes whatever the disk size.
const slabSize = 1 << 20

var slabs = sync.Pool{New: func() any {
	b := make([]byte, slabSize)
	return &b
}}

// getSlab takes a slab from the pool; its content is undefined.
func getSlab() *[]byte { return slabs.Get().(*[]byte) }

// putSlab gives a slab back to the pool.
func putSlab(b *[]byte) { slabs.Put(b) }
