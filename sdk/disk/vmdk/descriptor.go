package vmdk

import (
	"bytes"
	"strconv"
	"strings"
)

// A Descriptor is the text that says what a VMDK is made of: its extents
// (the files holding its sectors, in order) and, for a delta, its parent.
type Descriptor struct {
	Version    int
	CID        uint32 // content id: changes whenever the disk is written
	ParentCID  uint32 // the parent's CID when this delta was made; NoParent without a parent
	CreateType string
	// ParentFileNameHint names the parent's descriptor, relative to this
	// one's folder or absolute; empty without a parent.
	ParentFileNameHint string
	Extents            []ExtentDesc
}

// NoParent is the parentCID of a disk without a parent.
const NoParent = 0xffffffff

// An ExtentDesc is one extent line of a descriptor.
type ExtentDesc struct {
	Access  string // RW, RDONLY or NOACCESS
	Sectors int64  // 512-byte sectors of the virtual disk the extent holds
	Type    string // FLAT, VMFS, SPARSE, VMFSSPARSE, SESPARSE, ...
	File    string
	Offset  int64 // FLAT only: the sector of the file the extent starts at
}

// Limits on what a descriptor may hold; real ones are a few hundred bytes
// with one extent (a 2 TB twoGbMaxExtent disk has 1024).
const (
	maxDescriptor = 1 << 20
	maxExtents    = 8192
	sectorSize    = 512
	// maxSectors bounds a virtual disk (128 TiB; ESXi stops at 62 TB), so
	// sizes and offsets never overflow.
	maxSectors = 1 << 38
)

// ParseDescriptor parses a descriptor's text. It checks the fields this
// package reads; the disk database (ddb.*) and unknown keys are ignored.
func ParseDescriptor(b []byte) (*Descriptor, error) {
	if len(b) > maxDescriptor {
		return nil, unsupported("descriptor", "%d bytes, more than the %d a descriptor may hold", len(b), maxDescriptor)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i] // an embedded descriptor is padded with NULs
	}
	d := &Descriptor{CID: NoParent, ParentCID: NoParent}
	seen := map[string]bool{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && !isExtentLine(line) {
			if err := d.set(strings.TrimSpace(k), unquote(strings.TrimSpace(v)), seen); err != nil {
				return nil, err
			}
			continue
		}
		e, err := parseExtentLine(line)
		if err != nil {
			if fe, ok := err.(*FormatError); ok {
				fe.Field = "descriptor line " + strconv.Itoa(n+1)
			}
			return nil, err
		}
		if len(d.Extents) == maxExtents {
			return nil, unsupported("descriptor", "more than %d extents", maxExtents)
		}
		d.Extents = append(d.Extents, e)
	}
	if !seen["version"] {
		return nil, corrupt("descriptor", "no version line: not a VMDK descriptor")
	}
	if !seen["createtype"] {
		return nil, corrupt("descriptor", "no createType")
	}
	if len(d.Extents) == 0 {
		return nil, corrupt("descriptor", "no extent")
	}
	return d, nil
}

// isExtentLine tells an extent line from key=value: it starts with an
// access word and a sector count.
func isExtentLine(line string) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	switch f[0] {
	case "RW", "RDONLY", "NOACCESS":
		_, err := strconv.ParseInt(f[1], 10, 64)
		return err == nil
	}
	return false
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

func (d *Descriptor) set(k, v string, seen map[string]bool) error {
	key := strings.ToLower(k)
	switch key {
	case "version":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3 {
			return unsupported("descriptor version", "%q: this package reads versions 1 to 3", v)
		}
		d.Version = n
	case "cid", "parentcid":
		n, err := strconv.ParseUint(v, 16, 32)
		if err != nil {
			return corrupt("descriptor "+k, "%q is not 8 hex digits", v)
		}
		if key == "cid" {
			d.CID = uint32(n)
		} else {
			d.ParentCID = uint32(n)
		}
	case "createtype":
		d.CreateType = v
	case "parentfilenamehint":
		d.ParentFileNameHint = v
	default:
		return nil
	}
	if seen[key] {
		return corrupt("descriptor "+k, "set twice")
	}
	seen[key] = true
	return nil
}

// parseExtentLine reads `ACCESS SECTORS TYPE "FILE" [OFFSET]`.
func parseExtentLine(line string) (ExtentDesc, error) {
	var e ExtentDesc
	head, rest, ok := strings.Cut(line, `"`)
	f := strings.Fields(head)
	if !ok || len(f) != 3 {
		if len(f) == 3 && f[2] == "ZERO" {
			return e, unsupported("extent", "ZERO extents are not read")
		}
		return e, corrupt("extent", "%q is not `ACCESS SECTORS TYPE \"FILE\" [OFFSET]`", line)
	}
	name, tail, ok := strings.Cut(rest, `"`)
	if !ok || name == "" {
		return e, corrupt("extent", "%q: the file name is not quoted", line)
	}
	e.Access, e.Type, e.File = f[0], strings.ToUpper(f[2]), name
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 || n > maxSectors {
		return e, corrupt("extent", "%q: %s sectors: want 1 to %d", line, f[1], int64(maxSectors))
	}
	e.Sectors = n
	if tail = strings.TrimSpace(tail); tail != "" {
		o, err := strconv.ParseInt(tail, 10, 64)
		if err != nil || o < 0 || o > maxSectors {
			return e, corrupt("extent", "%q: offset %q", line, tail)
		}
		e.Offset = o
	}
	return e, nil
}
