//go:build linux

package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if v, ok := procField("/proc/cpuinfo", "model name"); ok {
		m.CPUModel = v
	}
	if v, ok := procField("/proc/meminfo", "MemTotal"); ok {
		if f := strings.Fields(v); len(f) > 0 {
			if kib, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				m.Memory = kib << 10
			}
		}
	}
	m.Nice = niceness()
	m.Rsync = firstLine("rsync", "--version")
	m.Cp = firstLine("cp", "--version")
	return m
}

// niceness is this process's nice value (its children inherit it), from
// /proc/self/stat.
func niceness() int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces: the fields start after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 17 {
		return 0
	}
	n, _ := strconv.Atoi(f[16]) // field 19 of proc(5), the third after ')' being field 3
	return n
}

// procField returns the value of the first "key: value" line of a /proc
// file.
func procField(path, key string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// freeSpace is how many bytes an unprivileged writer can still put in the
// file system holding dir.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

const dropCaches = "/proc/sys/vm/drop_caches"

// dropPageCache writes dirty pages out and drops the clean ones, so the
// next run reads from storage. It needs root (and a /proc that is not
// read-only, as in some containers).
func dropPageCache() error {
	syscall.Sync()
	f, err := os.OpenFile(dropCaches, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("drop the page cache: %w", err)
	}
	if _, err := f.WriteString("3\n"); err != nil {
		f.Close()
		return fmt.Errorf("drop the page cache: %w", err)
	}
	return f.Close()
}

// warmUp writes dirty pages out and reads every regular file under the
// paths, so the next run finds them in the page cache. Holes are skipped:
// reading them would fill the cache with zeros (64 GiB of them for the
// sparse disk), and a tool reading a hole finds nothing on storage anyway.
func warmUp(paths ...string) error {
	syscall.Sync()
	buf := make([]byte, 4<<20)
	for _, root := range paths {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if err := warmFile(path, buf); err != nil {
				return fmt.Errorf("warm up %s: %w", path, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Whence values of lseek(2) that find data and holes (Linux).
const (
	seekData = 3
	seekHole = 4
)

// warmFile reads the data of a file, hole by hole.
func warmFile(path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for off := int64(0); ; {
		start, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			return nil // no data past off
		}
		if err != nil {
			return err
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return err
		}
		for pos := start; pos < end; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-pos)], pos)
			pos += int64(n)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		off = end
	}
}

// fsyncFile syncs a file and says how long it took.
func fsyncFile(path string) (time.Duration, error) {
	start := time.Now()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", path, err)
	}
	return time.Since(start), f.Close()
}
