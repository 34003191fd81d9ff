package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Who may call the API: a client with a certificate of the installation's
// CA for a control plane (the CLI beside the configuration), or a bearer
// token. A token has a role: read may list and watch, operator may also
// act (run, failover). Tokens live in CONFIG/ca/tokens, one file per
// token holding its name, role and the SHA-256 of its secret: the secret
// itself is shown once, when it is made, and never stored.

// Role is what a token may do.
type Role string

const (
	RoleRead     Role = "read"
	RoleOperator Role = "operator"
)

// Token is a token as stored: without its secret.
type Token struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
}

// TokensDir is the folder of the API's tokens of a configuration folder.
func TokensDir(configDir string) string { return filepath.Join(pki.CADir(configDir), "tokens") }

// tokenPrefix starts every secret, so that one is recognised where it
// should not be (a log, a repository).
const tokenPrefix = "ferry_"

// CreateToken makes a token named name with role in dir and returns its
// secret. A token of that name must not exist.
func CreateToken(dir, name string, role Role) (string, error) {
	if !slices.Contains([]Role{RoleRead, RoleOperator}, role) {
		return "", fmt.Errorf("token role %q: the roles are read and operator: %w", role, errdefs.ErrInvalidArgument)
	}
	if !validName(name) {
		return "", fmt.Errorf("token name %q: use letters, digits, '-' and '_' (at most 64): %w", name, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	t := Token{Name: name, Role: role, SHA256: digest(secret), Created: time.Now().UTC()}
	b, _ := json.MarshalIndent(t, "", "  ")
	f, err := os.OpenFile(filepath.Join(dir, name+".json"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("a token named %q exists; revoke it first: %w", name, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return "", err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return secret, nil
}

// RevokeToken deletes the token named name.
func RevokeToken(dir, name string) error {
	if !validName(name) {
		return fmt.Errorf("no token %q: %w", name, errdefs.ErrNotFound)
	}
	err := os.Remove(filepath.Join(dir, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no token %q: %w", name, errdefs.ErrNotFound)
	}
	return err
}

// Tokens lists the tokens of dir by name; a file that is not a token is
// skipped.
func Tokens(dir string) ([]Token, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Token
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() || !validName(name) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() > 4096 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		var t Token
		if err != nil || json.Unmarshal(b, &t) != nil || t.Name != name || len(t.SHA256) != 64 {
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

func validName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func digest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// TokenCache holds the tokens of a folder in memory, so that a request
// reads no file: Authorize looks them up here. The server reloads it when
// the folder changes (Refresh, every few seconds) and on SIGHUP (Reload);
// a token revoked stops working at the next reload. Safe for concurrent
// use.
type TokenCache struct {
	dir string

	mu     sync.RWMutex
	tokens []Token
	print  string // the folder as last read (folderPrint)
}

// LoadTokens reads the tokens of dir (none when it does not exist).
func LoadTokens(dir string) (*TokenCache, error) {
	c := &TokenCache{dir: dir}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the folder's tokens again; on an error the tokens read
// before stay (and Refresh tries again once the folder changes).
func (c *TokenCache) Reload() error {
	// The print first: a change while the files are read shows at the
	// next Refresh.
	fp := tokensPrint(c.dir)
	tokens, err := Tokens(c.dir)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.print = fp
	if err != nil {
		return fmt.Errorf("read the tokens of %s: %w", c.dir, err)
	}
	c.tokens = tokens
	return nil
}

// Refresh reloads the tokens when the folder changed since they were
// read (a token made or revoked): it looks at the names, sizes and times
// of its files, without reading them. It says whether it reloaded.
func (c *TokenCache) Refresh() (bool, error) {
	c.mu.RLock()
	same := tokensPrint(c.dir) == c.print
	c.mu.RUnlock()
	if same {
		return false, nil
	}
	return true, c.Reload()
}

// Len is how many tokens the cache holds.
func (c *TokenCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.tokens)
}

// lookup finds the token whose secret is secret.
func (c *TokenCache) lookup(secret string) (Token, bool) {
	want := []byte(digest(secret))
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, t := range c.tokens {
		if subtle.ConstantTimeCompare(want, []byte(t.SHA256)) == 1 {
			return t, true
		}
	}
	return Token{}, false
}

// tokensPrint describes the folder dir and its entries by name, size and
// modification time.
func tokensPrint(dir string) string {
	info, err := os.Stat(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", info.ModTime().UnixNano())
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			fmt.Fprintf(&b, "%s error\n", e.Name())
			continue
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}

// Authorize lets through the calls their caller may make: a client
// certificate of a control plane (verified by the TLS listener) may do
// anything; a bearer token of tokens may read, and act when its role is
// operator. /v1/health needs nothing. Others get 401 or 403, as JSON.
func Authorize(next http.Handler, tokens *TokenCache) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/health" {
			next.ServeHTTP(w, r)
			return
		}
		role, who, err := caller(r, tokens)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
			return
		}
		if role != RoleOperator && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusForbidden, "permission_denied", fmt.Sprintf("%s may only read: %s %s needs an operator token", who, r.Method, r.URL.Path))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// caller says who made r and what it may do.
func caller(r *http.Request, tokens *TokenCache) (Role, string, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		id, err := pki.PeerIdentity(*r.TLS)
		if err == nil && id.Role == pki.RoleControl {
			return RoleOperator, "control plane " + id.Name, nil
		}
	}
	auth := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || secret == "" {
		return "", "", errors.New("no credentials: send a token (Authorization: Bearer ...; 'ferry token create') or a control plane's certificate")
	}
	if t, ok := tokens.lookup(secret); ok {
		return t.Role, "token " + t.Name, nil
	}
	return "", "", errors.New("unknown or revoked token")
}

// TLSConfig is the API listener's TLS: the control plane's certificate,
// TLS 1.3; a client may present a certificate of the installation's CA
// (then it must be a control plane's) or come with a token alone.
func TLSConfig(creds *pki.Credentials) *tls.Config {
	c := creds.ServerConfig(pki.RoleControl)
	c.ClientAuth = tls.VerifyClientCertIfGiven
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // a token must come with each request
		}
		return verify(cs)
	}
	return c
}
