package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The files of a CA folder and of a credentials folder.
const (
	CACertFile = "ca.crt"  // the CA's certificate (in both)
	CAKeyFile  = "ca.key"  // the CA's key (in the CA folder only)
	CertFile   = "tls.crt" // a credentials folder's certificate
	KeyFile    = "tls.key" // a credentials folder's key
)

// Default validity periods. A year is 365 days here.
const (
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	DefaultValidity   = 365 * 24 * time.Hour
)

// DefaultControlName names the control plane's certificate when
// CAOptions.Name is empty.
const DefaultControlName = "control"

// backdate is how far before its making a certificate becomes valid, so
// that a peer whose clock is a little behind accepts it at once.
const backdate = 5 * time.Minute

// CADir is the CA folder of the configuration folder configDir.
func CADir(configDir string) string { return filepath.Join(configDir, "ca") }

// ControlDir is the folder of the control plane's credentials of the
// configuration folder configDir.
func ControlDir(configDir string) string { return filepath.Join(CADir(configDir), "control") }

// IssuedDir is where `ferry ca issue NAME` writes NAME's credentials in
// the configuration folder configDir.
func IssuedDir(configDir, name string) string {
	return filepath.Join(CADir(configDir), "issued", name)
}

// CAOptions tune InitCA. The zero value is the default.
type CAOptions struct {
	// Name names the control plane's certificate (DefaultControlName when
	// empty).
	Name string
	// Validity is the CA's (DefaultCAValidity when zero).
	Validity time.Duration
	// ControlValidity is the control plane certificate's (DefaultValidity
	// when zero, or the CA's when that is shorter).
	ControlValidity time.Duration
	// Now is the clock the certificates are dated by (time.Now when nil).
	Now func() time.Time
	// Hosts are DNS names and IP addresses to put in the control plane's
	// certificate, for the tools that reach ferry server's API by address
	// and check it (curl, Prometheus); ferry itself needs none.
	Hosts []string
}

// InitCA creates a new CA in dir (dir/ca.crt, dir/ca.key with mode 0600)
// and the control plane's credentials in dir/control (see ControlDir). It
// refuses to replace an existing CA, naming the file it found; the error
// matches errdefs.ErrAlreadyExists. A bad name or validity matches
// errdefs.ErrInvalidArgument.
func InitCA(dir string, opts CAOptions) error {
	if opts.Name == "" {
		opts.Name = DefaultControlName
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.ControlValidity == 0 {
		opts.ControlValidity = min(DefaultValidity, opts.Validity)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	control := Identity{Role: RoleControl, Name: opts.Name}
	if err := control.Check(); err != nil {
		return err
	}
	if opts.Validity < 0 || opts.ControlValidity < 0 {
		return fmt.Errorf("validity must be positive: %w", errdefs.ErrInvalidArgument)
	}
	crt, key := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if ok, err := exists(crt); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("a CA exists already: %s; ferry never replaces one (every certificate it issued would stop working): %w", crt, errdefs.ErrAlreadyExists)
	}
	if ok, err := exists(key); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%s exists without %s (left by an init that did not finish?); remove it to start over: %w", key, CACertFile, errdefs.ErrAlreadyExists)
	}

	now := opts.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("make the CA's key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// A random suffix tells the CAs of two installations apart in
		// messages and listings.
		Subject:               pkix.Name{Organization: []string{"ferry"}, CommonName: "ferry CA " + fmt.Sprintf("%032x", serial)[:8]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return fmt.Errorf("make the CA's certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("make the CA's certificate: %w", err)
	}
	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return err
	}
	for _, h := range opts.Hosts {
		if err := checkHost(h); err != nil {
			return err
		}
	}
	leaf, leafKey, err := issue(caCert, caKey, control, opts.Hosts, now, opts.ControlValidity)
	if err != nil {
		return err
	}
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	// The CA's certificate comes last: without it, there is no CA.
	if err := writeCredentials(filepath.Join(dir, "control"), caCert.Raw, leaf, leafKey); err != nil {
		return err
	}
	if err := writeFile(key, caKeyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(crt, certPEM(caCert.Raw), 0o644)
}

// Issue issues a certificate for id, valid for validity (DefaultValidity
// when zero) from now, signed by the CA in caDir, and writes a credentials
// folder at out: out/ca.crt, out/tls.crt and out/tls.key (mode 0600). It
// replaces the files of an earlier issue there. hosts are extra DNS names
// and IP addresses to put in the certificate; ferry itself does not need
// them. Errors for a bad identity, host or validity, or a certificate that
// would outlive the CA, match errdefs.ErrInvalidArgument.
func Issue(caDir string, id Identity, hosts []string, validity time.Duration, out string) error {
	return issueAt(caDir, id, hosts, validity, out, time.Now)
}

// issueAt is Issue on a clock.
func issueAt(caDir string, id Identity, hosts []string, validity time.Duration, out string, now func() time.Time) error {
	if err := id.Check(); err != nil {
		return err
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < 0 {
		return fmt.Errorf("validity %v must be positive: %w", validity, errdefs.ErrInvalidArgument)
	}
	for _, h := range hosts {
		if err := checkHost(h); err != nil {
			return err
		}
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return err
	}
	// Credentials beside a CA key would be a CA folder overwritten.
	if ok, err := exists(filepath.Join(out, CAKeyFile)); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%s holds a CA's key; write the credentials elsewhere: %w", out, errdefs.ErrInvalidArgument)
	}
	leaf, leafKey, err := issue(caCert, caKey, id, hosts, now(), validity)
	if err != nil {
		return err
	}
	return writeCredentials(out, caCert.Raw, leaf, leafKey)
}

// issue makes a leaf certificate for id (DER) and its key (PEM).
func issue(caCert *x509.Certificate, caKey crypto.Signer, id Identity, hosts []string, now time.Time, validity time.Duration) ([]byte, []byte, error) {
	notAfter := now.Add(validity).Truncate(time.Second) // as a certificate holds it
	if now.After(caCert.NotAfter) {
		return nil, nil, fmt.Errorf("the CA expired on %s; make a new one (ferry ca init in a new folder) and issue every certificate again: %w",
			caCert.NotAfter.UTC().Format(time.DateTime+" MST"), errdefs.ErrFailedPrecondition)
	}
	if notAfter.After(caCert.NotAfter) {
		left := caCert.NotAfter.Sub(now)
		return nil, nil, fmt.Errorf("a certificate valid for %d days would outlive the CA, which expires on %s (in %d days): ask for fewer days: %w",
			days(validity), caCert.NotAfter.UTC().Format(time.DateTime+" MST"), days(left), errdefs.ErrInvalidArgument)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("make a key for %s: %w", id, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"ferry"}, OrganizationalUnit: []string{string(id.Role)}, CommonName: id.Name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.uri()},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("make a certificate for %s: %w", id, err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return der, kp, nil
}

// writeCredentials writes a credentials folder: the key first, the CA's
// certificate last.
func writeCredentials(out string, caDER, leafDER, leafKeyPEM []byte) error {
	if err := mkdirPrivate(out); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(out, KeyFile), leafKeyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(out, CertFile), certPEM(leafDER), 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(out, CACertFile), certPEM(caDER), 0o644)
}

// loadCA reads the CA of caDir: its certificate and its key.
func loadCA(caDir string) (*x509.Certificate, crypto.Signer, error) {
	crtPath, keyPath := filepath.Join(caDir, CACertFile), filepath.Join(caDir, CAKeyFile)
	cert, err := readCert(crtPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = withHint(err, "run 'ferry ca init' to make a CA")
		}
		return nil, nil, err
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA's certificate: %w", crtPath, errdefs.ErrInvalidArgument)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	if !samePublicKey(key.Public(), cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s is not the key of %s: %w", keyPath, crtPath, errdefs.ErrInvalidArgument)
	}
	return cert, key, nil
}

// checkHost returns an error unless h is an IP address or a DNS name.
func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	bad := h == "" || len(h) > 253
	for i, label := range strings.Split(h, ".") {
		if bad {
			break
		}
		if label == "*" && i == 0 && strings.Contains(h, ".") {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			bad = true
			break
		}
		for j := 0; j < len(label); j++ {
			if c := label[j]; !alnum(c) && c != '-' {
				bad = true
				break
			}
		}
	}
	if bad {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name: %w", h, errdefs.ErrInvalidArgument)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("make a serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 { // zero is not a serial
			return n, nil
		}
	}
}

func days(d time.Duration) int64 { return int64(d / (24 * time.Hour)) }

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode a key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
