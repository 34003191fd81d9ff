package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/hashicorp/hcl/v2"
)

// readFile reads a configuration file: a regular file, or a symbolic link
// to one, of at most MaxFileSize bytes. A named pipe, a device or a socket
// is refused without being read (a FIFO would block forever, /dev/zero
// would fill memory), and the file is opened without blocking and checked
// again once open, in case it was swapped in between.
func readFile(path string) ([]byte, *hcl.Diagnostic) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, readError(path, err)
	}
	if d := checkRegular(path, info); d != nil {
		return nil, d
	}
	f, err := os.OpenFile(path, openFlags, 0)
	if err != nil {
		return nil, readError(path, err)
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return nil, readError(path, err)
	}
	if d := checkRegular(path, info); d != nil {
		return nil, d
	}
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, readError(path, err)
	}
	if len(src) > MaxFileSize {
		return nil, tooLarge(path)
	}
	return src, nil
}

func checkRegular(path string, info fs.FileInfo) *hcl.Diagnostic {
	if !info.Mode().IsRegular() {
		what := "not a regular file"
		switch t := info.Mode().Type(); {
		case t&fs.ModeNamedPipe != 0:
			what = "a named pipe (FIFO)"
		case t&fs.ModeDevice != 0:
			what = "a device"
		case t&fs.ModeSocket != 0:
			what = "a socket"
		}
		if target, err := os.Readlink(path); err == nil {
			what = fmt.Sprintf("a symbolic link to %s, which is %s", target, what)
		}
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Configuration file is not a regular file",
			Detail:   fmt.Sprintf("%s is %s; ferry reads only regular files (or symbolic links to them).", path, what),
		}
	}
	if info.Size() > MaxFileSize {
		return tooLarge(path)
	}
	return nil
}

func tooLarge(path string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Configuration file too large",
		Detail:   fmt.Sprintf("%s is larger than %d MiB, the most ferry reads of a configuration file.", path, MaxFileSize>>20),
	}
}

func readError(path string, err error) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Cannot read configuration file",
		Detail:   fmt.Sprintf("Reading %s failed: %s.", path, err),
	}
}
