package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Credentials are a certificate, its key and the CA to trust: what one
// end of a connection needs. They are safe for concurrent use.
type Credentials struct {
	cert  tls.Certificate
	leaf  *x509.Certificate
	ca    *x509.Certificate
	roots *x509.CertPool // the CA, alone
	id    Identity
	now   func() time.Time // nil: time.Now
}

// credentialsHint says what to do about a file of a credentials folder
// that is missing or damaged.
func credentialsHint(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return withHint(err, "a credentials folder holds "+CACertFile+", "+CertFile+" and "+KeyFile+", as 'ferry ca issue' writes them: copy the whole folder")
	}
	return withHint(err, "copy the folder 'ferry ca issue' wrote again")
}

// Load reads a credentials folder (ca.crt, tls.crt, tls.key) and checks
// that they belong together: the certificate names an identity, the CA
// signed it, the key is its key. It does not check validity dates (see
// NotAfter). Errors name the file and say what to do.
func Load(dir string) (*Credentials, error) {
	caPath, crtPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	ca, err := readCert(caPath)
	if err != nil {
		return nil, credentialsHint(err)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("%s is not a CA's certificate; copy the whole folder 'ferry ca issue' wrote: %w", caPath, errdefs.ErrInvalidArgument)
	}
	leaf, err := readCert(crtPath)
	if err != nil {
		return nil, credentialsHint(err)
	}
	id, err := identityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; it is not a certificate 'ferry ca issue' made: %w", crtPath, err, errdefs.ErrInvalidArgument)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("%s was not issued by the CA of %s (%s); copy the whole folder 'ferry ca issue' wrote, or issue it again: %w",
			crtPath, caPath, ca.Subject.CommonName, errdefs.ErrInvalidArgument)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, credentialsHint(err)
	}
	if !samePublicKey(key.Public(), leaf.PublicKey) {
		return nil, fmt.Errorf("%s is not the key of %s; issue the credentials again: %w", keyPath, crtPath, errdefs.ErrInvalidArgument)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &Credentials{
		cert:  tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
		leaf:  leaf,
		ca:    ca,
		roots: roots,
		id:    id,
	}, nil
}

// Identity is who the certificate names.
func (c *Credentials) Identity() Identity { return c.id }

// NotAfter is when the certificate expires.
func (c *Credentials) NotAfter() time.Time { return c.leaf.NotAfter }

// CA is the certificate of the CA the credentials trust.
func (c *Credentials) CA() *x509.Certificate { return c.ca }

// ServerConfig is the TLS configuration of a server: TLS 1.3 only, a
// client certificate required and verified against the CA (chain,
// validity, client-auth usage), and the client's role one of accept (a
// proxy accepts tasks from RoleControl and data from RoleProxy). A client
// refused for its role gets an *IdentityError on the server's side. It
// panics without a role to accept: a server that accepts no one is a bug.
func (c *Credentials) ServerConfig(accept ...Role) *tls.Config {
	if len(accept) == 0 {
		panic("pki: ServerConfig needs the roles to accept")
	}
	accept = slices.Clone(accept)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.roots,
		Time:         c.now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// The chain is verified already (RequireAndVerifyClientCert).
			id, err := PeerIdentity(cs)
			if err != nil {
				return err
			}
			if !slices.Contains(accept, id.Role) {
				return &IdentityError{Got: id, Accept: accept}
			}
			return nil
		},
	}
}

// ClientConfig is the TLS configuration of a client that wants to reach
// the server named want: TLS 1.3 only; the server's certificate must chain
// to the CA (and be valid now, for server auth) and name exactly want,
// whatever address was dialed. A server that is someone else gives an
// *IdentityError; a certificate that does not verify gives a
// *tls.CertificateVerificationError.
func (c *Credentials) ClientConfig(want Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cert},
		RootCAs:      c.roots,
		// The standard verification checks a host name; ferry's identity
		// is the certificate's name, so VerifyConnection verifies it all.
		InsecureSkipVerify: true,
		Time:               c.now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			opts := x509.VerifyOptions{
				Roots:         c.roots,
				Intermediates: x509.NewCertPool(),
				CurrentTime:   c.time(),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
			}
			id, err := PeerIdentity(cs)
			if err != nil {
				return err
			}
			if id != want {
				return &IdentityError{Got: id, Want: want}
			}
			return nil
		},
	}
}

func (c *Credentials) time() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// PeerIdentity returns who the peer certificate of a connection names. It
// reads the certificate; the verification is the configuration's: on a
// connection made with ServerConfig or ClientConfig, a finished handshake
// means the certificate was verified.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("the peer sent no certificate")
	}
	id, err := identityOf(cs.PeerCertificates[0])
	if err != nil {
		return Identity{}, fmt.Errorf("peer certificate %q: %w", cs.PeerCertificates[0].Subject.CommonName, err)
	}
	return id, nil
}

// IdentityError is a peer whose certificate verifies but names someone
// this end does not accept. It matches errdefs.ErrPermissionDenied.
type IdentityError struct {
	Got    Identity
	Want   Identity // on a client: the server it wanted
	Accept []Role   // on a server: the roles it accepts
}

func (e *IdentityError) Error() string {
	if e.Accept != nil {
		return fmt.Sprintf("peer certificate names %s; only %s may connect", e.Got, roleList(e.Accept))
	}
	return fmt.Sprintf("peer certificate names %s, want %s", e.Got, e.Want)
}

// Is makes errors.Is(err, errdefs.ErrPermissionDenied) hold.
func (e *IdentityError) Is(target error) bool { return target == errdefs.ErrPermissionDenied }

// roleList is "control", or "control or proxy".
func roleList(roles []Role) string {
	rs := make([]string, len(roles))
	for i, r := range roles {
		rs[i] = string(r)
	}
	return strings.Join(rs, " or ")
}

// readCert reads a file that holds one PEM certificate.
func readCert(path string) (*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate: %w", path, errdefs.ErrDataLoss)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%s holds more than one certificate: %w", path, errdefs.ErrInvalidArgument)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: the certificate is damaged (%v): %w", path, err, errdefs.ErrDataLoss)
	}
	return cert, nil
}

// readKey reads a file that holds one PEM private key (PKCS #8). Its
// errors never quote the file.
func readKey(path string) (crypto.Signer, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s holds no PEM private key: %w", path, errdefs.ErrDataLoss)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%s holds more than a key: %w", path, errdefs.ErrInvalidArgument)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parser's message says what is wrong, not what the key is.
		return nil, fmt.Errorf("%s: the key is damaged: %w", path, errdefs.ErrDataLoss)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a key of type %T cannot sign: %w", path, k, errdefs.ErrInvalidArgument)
	}
	return s, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// withHint adds what to do to err.
func withHint(err error, hint string) error { return fmt.Errorf("%w; %s", err, hint) }
