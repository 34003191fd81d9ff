package sdk

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// The connection between ferry and a plugin is mutual TLS 1.3. For each
// start the host makes two P-256 key pairs with self-signed certificates,
// its own and the plugin's, and hands the plugin its pair and the host's
// certificate in the environment variable tlsEnv. Each side then accepts
// the other's certificate alone. P-256 keys take a fraction of the time
// of the P-521 ones go-plugin's automatic mutual TLS makes on each side,
// to make and in the TLS handshake, and the plugin makes none.
//
// A plugin built with an older sdk knows only go-plugin's automatic mutual
// TLS: it finds the host's certificate in PLUGIN_CLIENT_CERT, makes a pair
// of its own and sends its certificate in the handshake line, which
// go-plugin on the host then trusts in place of the one the host made.
// Both ways, only the two processes hold the keys the connection accepts.

// tlsEnv carries, in PEM, the plugin's certificate, its private key
// (PKCS #8) and the host's certificate, in that order.
const tlsEnv = "FERRY_PLUGIN_TLS"

// autoMTLSEnv is where go-plugin's automatic mutual TLS looks for the
// host's certificate (PEM).
const autoMTLSEnv = "PLUGIN_CLIENT_CERT"

// tlsServerName is the name the host expects in the plugin's certificate:
// go-plugin's own certificates carry it too.
const tlsServerName = "localhost"

// noExpiry is RFC 5280's date for a certificate with no well-defined end:
// the certificates live as long as the plugin process.
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// HostTLS is the host's side of one plugin start.
type HostTLS struct {
	// Config is the host's end of the connection: its certificate, and
	// trust in the plugin's certificate alone. A plugin of an older sdk
	// sends a certificate of its own in go-plugin's handshake, and
	// go-plugin puts it in Config's RootCAs in place of the plugin's.
	Config *tls.Config
	// Env is what the plugin's environment needs, as KEY=value: the
	// plugin's key pair with the host's certificate, and the host's
	// certificate where a plugin of an older sdk looks for it.
	Env []string
}

// NewHostTLS makes the credentials of one plugin start. Each start needs
// its own: they are what keeps another process from talking to the plugin
// or posing as it.
func NewHostTLS() (HostTLS, error) {
	host, hostKey, err := newCertificate("ferry", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return HostTLS{}, err
	}
	plugin, pluginKey, err := newCertificate(tlsServerName, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return HostTLS{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(pluginKey)
	if err != nil {
		return HostTLS{}, fmt.Errorf("encode the plugin's key: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(plugin)
	hostPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Raw})
	var env bytes.Buffer
	env.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: plugin.Raw}))
	env.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	env.Write(hostPEM)
	return HostTLS{
		Config: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{host.Raw}, PrivateKey: hostKey, Leaf: host}},
			RootCAs:      roots,
			ServerName:   tlsServerName,
			MinVersion:   tls.VersionTLS13,
		},
		Env: []string{tlsEnv + "=" + env.String(), autoMTLSEnv + "=" + string(hostPEM)},
	}, nil
}

// newCertificate makes a P-256 key and a self-signed certificate for it,
// valid for one use. The certificate is no CA: it cannot vouch for another
// one, so trusting it trusts this key alone.
func newCertificate(name string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("make a TLS key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              noExpiry,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("make a TLS certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("read back a TLS certificate: %w", err)
	}
	return cert, key, nil
}

// handedTLS is the value of tlsEnv this process was started with, taken
// out of the environment while the sdk is initialised, before the plugin's
// main runs: no process the plugin starts, even before it calls Serve,
// inherits the plugin's private key.
var handedTLS = takeEnv(tlsEnv)

// takeEnv returns an environment variable and removes it.
func takeEnv(key string) string {
	v, ok := os.LookupEnv(key)
	if ok {
		_ = os.Unsetenv(key)
	}
	return v
}

// pluginTLSConfig reads the value of tlsEnv into the plugin's end of the
// connection: its key pair, and trust in the host's certificate alone.
func pluginTLSConfig(v string) (*tls.Config, error) {
	var blocks []*pem.Block
	rest := []byte(v)
	for {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		blocks, rest = append(blocks, b), r
	}
	if len(blocks) != 3 || blocks[0].Type != "CERTIFICATE" || blocks[1].Type != "PRIVATE KEY" ||
		blocks[2].Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("read %s: want the plugin's certificate, its private key and the host's certificate, in PEM", tlsEnv)
	}
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(blocks[0]), pem.EncodeToMemory(blocks[1]))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", tlsEnv, err)
	}
	host, err := x509.ParseCertificate(blocks[2].Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: the host's certificate: %w", tlsEnv, err)
	}
	trusted := x509.NewCertPool()
	trusted.AddCert(host)
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    trusted,
		MinVersion:   tls.VersionTLS13,
	}, nil
}
