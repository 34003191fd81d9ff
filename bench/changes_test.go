package bench

import (
	"bytes"
	"testing"
)

func TestChanges(t *testing.T) {
	const size = 256 << 20
	for _, tc := range []struct {
		name    string
		percent float64
	}{
		{"1 percent", 1},
		{"10 percent", 10},
		{"tiny", 0.001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := NewChanges(9, size, tc.percent, DiskMix)
			if err != nil {
				t.Fatal(err)
			}
			covered := make([]bool, size/GranuleUnit)
			var text, random int64
			for _, w := range cs.Writes {
				if w.Offset < 0 || w.End() > size {
					t.Fatalf("write of %d at %d is outside the %d-byte disk", w.Length, w.Offset, int64(size))
				}
				if w.Offset%GranuleUnit != 0 || w.Length%GranuleUnit != 0 || w.Length < GranuleUnit || w.Length > MaxGranule {
					t.Fatalf("write of %d at %d: want 4-64 KiB at a 4 KiB boundary", w.Length, w.Offset)
				}
				for b := w.Offset / GranuleUnit; b < w.End()/GranuleUnit; b++ {
					covered[b] = true
				}
				switch w.Kind {
				case Text:
					text += w.Length
				case Random:
					random += w.Length
				default:
					t.Fatalf("write at %d holds %s", w.Offset, w.Kind)
				}
			}
			var n int64
			for _, c := range covered {
				if c {
					n++
				}
			}
			want := int64(tc.percent / 100 * float64(size/GranuleUnit))
			want = max(want, 1)
			if n < want || n >= want+MaxGranule/GranuleUnit {
				t.Errorf("the writes cover %d blocks, want %d (+ less than one write)", n, want)
			}
			if got := cs.Bytes(); got != n*GranuleUnit {
				t.Errorf("Bytes() = %d, want the %d covered bytes", got, n*GranuleUnit)
			}
			es := cs.Extents()
			for i, e := range es {
				if i > 0 && e.Offset <= es[i-1].End() {
					t.Fatalf("extents %d and %d touch or overlap", i-1, i)
				}
			}
			if len(cs.Writes) > 50 {
				if share := float64(text) / float64(text+random); share < 0.45 || share > 0.70 {
					t.Errorf("text is %.2f of the written bytes, want about 4/7", share)
				}
			}
		})
	}
}

func TestChangesDeterministic(t *testing.T) {
	a, _ := NewChanges(5, 64<<20, 2, DiskMix)
	b, _ := NewChanges(5, 64<<20, 2, DiskMix)
	c, _ := NewChanges(6, 64<<20, 2, DiskMix)
	if len(a.Writes) != len(b.Writes) {
		t.Fatalf("the same seed gave %d and %d writes", len(a.Writes), len(b.Writes))
	}
	var da, db bytes.Buffer
	collect := func(buf *bytes.Buffer) func(int64, []byte) error {
		return func(off int64, data []byte) error {
			buf.Write(data)
			return nil
		}
	}
	if err := a.Apply(collect(&da)); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(collect(&db)); err != nil {
		t.Fatal(err)
	}
	for i := range a.Writes {
		if a.Writes[i] != b.Writes[i] {
			t.Fatalf("write %d differs: %+v and %+v", i, a.Writes[i], b.Writes[i])
		}
	}
	if !bytes.Equal(da.Bytes(), db.Bytes()) {
		t.Fatal("the same seed gave different data")
	}
	if len(c.Writes) > 0 && c.Writes[0] == a.Writes[0] {
		t.Fatal("different seeds gave the same first write")
	}
	// New data: no write holds a zero block.
	if err := a.Apply(func(off int64, data []byte) error {
		if n := countZeroBlocks(data, GranuleUnit); n > 0 {
			t.Fatalf("the write at %d holds %d zero blocks", off, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestChangesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int64
		percent float64
		mix     Mix
	}{
		{"no percent", 1 << 20, 0, DiskMix},
		{"too many", 1 << 20, 60, DiskMix},
		{"disk too small", 100, 1, DiskMix},
		{"only zeros", 1 << 20, 1, Mix{Zero: 100}},
	} {
		if _, err := NewChanges(1, tc.size, tc.percent, tc.mix); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestCompressedSize(t *testing.T) {
	im, _ := NewImage(3, 2<<20, DiskMix)
	zeros := im.Extents(Zero)
	c, err := CompressedSize(im, zeros)
	if err != nil {
		t.Fatal(err)
	}
	var raw int64
	for _, e := range zeros {
		raw += e.Length
	}
	if c.Raw != raw || c.Compressed <= 0 || c.Compressed > raw/100 {
		t.Errorf("zeros: %+v, want raw %d compressing to almost nothing", c, raw)
	}
	random := im.Extents(Random)
	c, err = CompressedSize(im, random)
	if err != nil {
		t.Fatal(err)
	}
	if c.Compressed < c.Raw {
		t.Errorf("random: %+v, want no gain", c)
	}
	if _, err := CompressedSize(im, []Extent{{Offset: 2<<20 - 10, Length: 20}}); err == nil {
		t.Error("an extent past the end compressed")
	}
}
