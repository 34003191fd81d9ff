package sdktest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// DebianPython is Debian's interpreter, which has Debian's modules (such
// as python3-libvhdi's pyvhdi); the python3 first on PATH may be another
// build.
const DebianPython = "/usr/bin/python3"

// MissingJudge skips the test for want of an outside judge (a tool such as
// qemu-img or libvhdi), or fails it under CI, which must install it.
func MissingJudge(t testing.TB, what, install string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing; CI must install it (%s)", what, install)
	}
	t.Skipf("%s is missing (%s); the test runs in CI", what, install)
}

// libvhdiScript reads the disk of argv[1] through libvhdi, argv[2:] its
// parents in order, and prints the SHA-256 of the whole virtual disk.
const libvhdiScript = `
import hashlib, sys, pyvhdi
files = []
for p in sys.argv[1:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
top = files[0]
h = hashlib.sha256()
size = top.get_media_size()
off = 0
while off < size:
    n = min(1 << 20, size - off)
    b = top.read_buffer_at_offset(n, off)
    if len(b) != n:
        sys.exit("short read at %d: %d of %d" % (off, len(b), n))
    h.update(b)
    off += n
print(h.hexdigest())
`

// LibvhdiDigest reads a VHDX or VHD chain, top first, with libvhdi (the
// independent judge of differencing chains, which qemu-img cannot read)
// and returns the hex SHA-256 of its virtual disk. Without libvhdi the
// test skips, except under CI (see MissingJudge).
func LibvhdiDigest(t testing.TB, chain ...string) string {
	t.Helper()
	if err := exec.Command(DebianPython, "-c", "import pyvhdi").Run(); err != nil {
		MissingJudge(t, "pyvhdi for "+DebianPython, "apt-get install python3-libvhdi")
	}
	out, err := exec.Command(DebianPython, append([]string{"-c", libvhdiScript}, chain...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("libvhdi on %v: %v\n%s", chain, err, out)
	}
	return strings.TrimSpace(string(out))
}
