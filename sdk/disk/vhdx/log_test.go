package vhdx

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// logEntryBytes encodes one log entry that writes each 4 KiB sector of
// sectors at its offset, as Hyper-V would before updating metadata.
func logEntryBytes(id GUID, seq uint64, flushed, last int64, offs []int64, sectors [][]byte) []byte {
	descSectors := (len(offs) + 2 + 127) / 128
	b := make([]byte, (descSectors+len(offs))*logSector)
	copy(b[0:4], "loge")
	binary.LittleEndian.PutUint32(b[8:12], uint32(len(b)))
	binary.LittleEndian.PutUint64(b[16:24], seq)
	binary.LittleEndian.PutUint32(b[24:28], uint32(len(offs)))
	copy(b[32:48], id[:])
	binary.LittleEndian.PutUint64(b[48:56], uint64(flushed))
	binary.LittleEndian.PutUint64(b[56:64], uint64(last))
	for i, off := range offs {
		d := b[logEntryHeader+logDescSize*i:]
		s := sectors[i]
		copy(d[0:4], "desc")
		copy(d[4:8], s[4092:4096])
		copy(d[8:16], s[0:8])
		binary.LittleEndian.PutUint64(d[16:24], uint64(off))
		binary.LittleEndian.PutUint64(d[24:32], seq)
		ds := b[(descSectors+i)*logSector:]
		copy(ds[0:4], "data")
		binary.LittleEndian.PutUint32(ds[4:8], uint32(seq>>32))
		copy(ds[8:4092], s[8:4092])
		binary.LittleEndian.PutUint32(ds[4092:4096], uint32(seq))
	}
	binary.LittleEndian.PutUint32(b[4:8], checksum(b, 4))
	return b
}

// dirtyLogImage makes a dynamic image whose block 2 is written only
// through a pending log entry, the way Hyper-V leaves a file it did not
// close: the payload is in the file, the BAT update is in the log. It
// returns the path and the content the disk has once the log is applied.
func dirtyLogImage(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, "dirty.vhdx")
	img, err := Create(path, Options{Size: 4 * mib, BlockSize: mib})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 4*mib)
	copy(want[100:], "written before the log")
	img.WriteAt(want[:200], 0)
	v := img.l.(*vhdxFile)
	h, slot, batOff := v.hdr, v.slot, int64(v.reg.bat.offset)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	payload := roundUp(st.Size(), mib)
	block := make([]byte, mib)
	copy(block[3000:], bytes.Repeat([]byte("in the log "), 500))
	copy(want[2*mib:], block)
	if _, err := f.WriteAt(block, payload); err != nil {
		t.Fatal(err)
	}
	batPage := make([]byte, logSector)
	if _, err := f.ReadAt(batPage, batOff); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(batPage[8*2:], batEntry(blockFullPresent, payload))
	logID := newGUID()
	entry := logEntryBytes(logID, 7, payload+mib, payload+mib, []int64{batOff}, [][]byte{batPage})
	if _, err := f.WriteAt(entry, int64(h.logOffset)); err != nil {
		t.Fatal(err)
	}
	h.logGUID = logID
	buf := make([]byte, headerSize)
	for i := range 2 {
		h.seq++
		h.marshal(buf)
		if _, err := f.WriteAt(buf, []int64{header1Offset, header2Offset}[(1-slot+i)%2]); err != nil {
			t.Fatal(err)
		}
	}
	return path, want
}

func TestLogReplay(t *testing.T) {
	dir := t.TempDir()
	path, want := dirtyLogImage(t, dir)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// Read-only: the log is applied in memory, the file is untouched.
	img, err := Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, img); !bytes.Equal(got, want) {
		t.Fatalf("read-only open: content differs at %d", firstDiff(got, want))
	}
	img.Close()
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Fatal("a read-only open changed the file")
	}

	cp := filepath.Join(dir, "for-qemu.vhdx")
	snapshot(t, path, cp)
	wantBefore := bytes.Clone(want)

	// Writable: the log is applied to the file and emptied.
	img, err = Open(path, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if !img.l.(*vhdxFile).hdr.logGUID.IsZero() {
		t.Fatal("the header still names a log after replay")
	}
	img.WriteAt([]byte("after"), 3*mib)
	copy(want[3*mib:], "after")
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuJudge(t, writeRaw(t, dir, want), path)

	// qemu, as a judge of the log we made: its check -r all replays it.
	q := needQemuImg(t)
	run(t, q, "check", "-r", "all", "-f", "vhdx", cp)
	run(t, q, "compare", "-f", "raw", "-F", "vhdx", writeRaw(t, dir, wantBefore), cp)
}

func TestParseLogPicksNewestSequence(t *testing.T) {
	id := newGUID()
	sector := func(c byte) []byte { return bytes.Repeat([]byte{c}, logSector) }
	log := make([]byte, mib)
	// An old sequence (seq 3) and a newer one (seq 10, 11) elsewhere.
	copy(log[0:], logEntryBytes(id, 3, 0, 0, []int64{8192}, [][]byte{sector('a')}))
	e10 := logEntryBytes(id, 10, 0, 0, []int64{8192}, [][]byte{sector('b')})
	copy(log[64*kib:], e10)
	copy(log[64*kib+len(e10):], logEntryBytes(id, 11, 0, 0, []int64{12288}, [][]byte{sector('c')}))
	// An entry of another log is ignored.
	copy(log[128*kib:], logEntryBytes(newGUID(), 50, 0, 0, []int64{8192}, [][]byte{sector('x')}))
	r, err := parseLog(log, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.writes) != 2 || r.writes[0].off != 8192 || r.writes[0].data[0] != 'b' || r.writes[1].data[0] != 'c' {
		t.Fatalf("replay %+v, want sequence 10-11", r.writes)
	}
	// A corrupted entry breaks its sequence: 10 alone is then newest.
	log[64*kib+len(e10)+100] ^= 1
	if r, err = parseLog(log, id); err != nil || len(r.writes) != 1 || r.writes[0].data[0] != 'b' {
		t.Fatalf("replay after corrupting entry 11: %+v, %v", r.writes, err)
	}
}
