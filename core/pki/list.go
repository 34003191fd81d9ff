package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// WarnBefore is how long before a certificate expires it is worth a
// warning: time to issue a new one and copy it to its host.
const WarnBefore = 30 * 24 * time.Hour

// Entry is a certificate List found.
type Entry struct {
	// Dir is the folder: the CA folder for the CA, else a credentials
	// folder.
	Dir string
	// CA is set for the CA's own certificate.
	CA bool
	// Identity is who a leaf names (zero for the CA, or when unreadable).
	Identity Identity
	// Subject is the certificate's common name.
	Subject string
	// NotAfter is when the certificate expires (zero when unreadable).
	NotAfter time.Time
	// Problem says why these credentials would not work, dates aside: a
	// damaged or missing file, a certificate of another CA. Nil when they
	// would.
	Problem error
}

// List returns the certificates of the CA in caDir: its own, the control
// plane's (ControlDir) and those Issue wrote under caDir/issued, by name.
// Credentials written elsewhere (Issue's out) are not known to it. A
// folder whose credentials are damaged or belong to another CA is listed
// with its Problem; an error is returned only when the CA itself cannot
// be read.
func List(caDir string) ([]Entry, error) {
	ca, err := readCert(filepath.Join(caDir, CACertFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = withHint(err, "run 'ferry ca init' to make a CA")
		}
		return nil, err
	}
	entries := []Entry{{Dir: caDir, CA: true, Subject: ca.Subject.CommonName, NotAfter: ca.NotAfter}}
	dirs := []string{filepath.Join(caDir, "control")}
	issued := filepath.Join(caDir, "issued")
	names, err := os.ReadDir(issued)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", issued, err)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].Name() < names[j].Name() })
	for _, n := range names {
		if n.IsDir() && !strings.HasPrefix(n.Name(), ".") {
			dirs = append(dirs, filepath.Join(issued, n.Name()))
		}
	}
	for _, dir := range dirs {
		e := Entry{Dir: dir}
		if leaf, err := readCert(filepath.Join(dir, CertFile)); err == nil {
			e.Subject, e.NotAfter = leaf.Subject.CommonName, leaf.NotAfter
			e.Identity, _ = identityOf(leaf)
		}
		c, err := Load(dir)
		switch {
		case err != nil:
			e.Problem = err
		case !c.ca.Equal(ca):
			e.Problem = fmt.Errorf("%s is another CA's (%s), not this one's (%s)", filepath.Join(dir, CACertFile), c.ca.Subject.CommonName, ca.Subject.CommonName)
		}
		entries = append(entries, e)
	}
	return entries, nil
}
