package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Role is what a certificate's holder is in a ferry installation.
type Role string

// The roles.
const (
	RoleControl Role = "control" // the control plane (ferry run / ferry server)
	RoleProxy   Role = "proxy"   // a ferry proxy agent
)

// Valid reports whether r is one of the roles above.
func (r Role) Valid() bool { return r == RoleControl || r == RoleProxy }

// Identity is who a certificate names.
type Identity struct {
	Role Role
	Name string
}

// String is how ferry shows an identity to people: proxy "p1".
func (id Identity) String() string { return fmt.Sprintf("%s %q", id.Role, id.Name) }

// Check returns an error (of class errdefs.ErrInvalidArgument) saying what
// is wrong with id, or nil.
func (id Identity) Check() error {
	if !id.Role.Valid() {
		return fmt.Errorf("role %q: must be %s or %s: %w", id.Role, RoleControl, RoleProxy, errdefs.ErrInvalidArgument)
	}
	return CheckName(id.Name)
}

// MaxNameLen is the longest name a certificate can carry (the longest a
// DNS label may be, so that a name also fits there).
const MaxNameLen = 63

// CheckName returns an error (of class errdefs.ErrInvalidArgument) when
// name cannot name a control plane or a proxy: it must be 1 to MaxNameLen
// letters, digits, '-', '_' and '.', starting with a letter or a digit.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("name is empty: %w", errdefs.ErrInvalidArgument)
	case len(name) > MaxNameLen:
		return fmt.Errorf("name %q is %d characters, more than %d: %w", name, len(name), MaxNameLen, errdefs.ErrInvalidArgument)
	case !alnum(name[0]):
		return fmt.Errorf("name %q must start with a letter or a digit: %w", name, errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("name %q: %q is not allowed (letters, digits, '-', '_' and '.' are): %w", name, rune(c), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// uriScheme is the scheme of the URI SAN that names a certificate's
// identity: ferry:<role>/<name>.
const uriScheme = "ferry"

// uri is the URI SAN of id.
func (id Identity) uri() *url.URL {
	return &url.URL{Scheme: uriScheme, Opaque: string(id.Role) + "/" + id.Name}
}

// errNoIdentity: a certificate that names no ferry identity.
var errNoIdentity = errors.New("the certificate names no ferry identity (no ferry: URI)")

// identityOf reads the identity a certificate names: its one ferry: URI
// SAN, which must agree with its CommonName.
func identityOf(cert *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == uriScheme {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, errNoIdentity
	case 1:
	default:
		return Identity{}, fmt.Errorf("the certificate names %d ferry identities; a certificate names one", len(found))
	}
	u := found[0]
	role, name, ok := strings.Cut(u.Opaque, "/")
	if !ok || u.Host != "" || u.RawQuery != "" || u.Fragment != "" {
		return Identity{}, fmt.Errorf("the certificate's identity %q is not of the form ferry:<role>/<name>", u.String())
	}
	id := Identity{Role: Role(role), Name: name}
	if err := id.Check(); err != nil {
		return Identity{}, fmt.Errorf("the certificate's identity %q: %w", u.String(), err)
	}
	if cert.Subject.CommonName != name {
		return Identity{}, fmt.Errorf("the certificate's identity %q does not match its common name %q", u.String(), cert.Subject.CommonName)
	}
	return id, nil
}
