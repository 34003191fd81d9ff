// Package pki is the trust of a ferry installation: one certificate
// authority (CA) per installation, the certificates it issues to the
// control plane and to proxies, and the TLS configurations with which they
// authenticate each other.
//
// # Identities
//
// A certificate names one Identity: a role (control or proxy) and a name.
// The leaf carries it twice: as its Subject CommonName (the name, for
// people and for other tools) and as the one URI SAN "ferry:<role>/<name>",
// which is what PeerIdentity reads and what verification checks; the two
// must agree. Names are 1 to 63 letters, digits, '-', '_' and '.', starting
// with a letter or a digit (so a name is also a safe folder name).
//
// Identity is by name, never by address: a client checks that the server's
// certificate names exactly the identity it wants, whatever address it
// dialed, so certificates need no DNS or IP SANs. Issue adds the hosts it is
// given as SANs, for other tools; ferry ignores them.
//
// # Verification
//
// Both sides use TLS 1.3 only and trust only the installation's CA (never
// the system's roots). A server requires a client certificate, verifies its
// chain, validity period and client-auth usage, and accepts the client only
// when its role is one the server was told to accept (a proxy takes tasks
// from the control plane and data from proxies). A client verifies the
// server's chain, validity period and server-auth usage itself, in
// VerifyConnection, and then that the certificate names the identity it
// wants. Explain turns the errors of a refused handshake, on either side,
// into a sentence an operator can act on.
//
// # Keys and certificates
//
// Keys are ECDSA P-256 (fast to make, small, and accepted everywhere), kept
// as PKCS #8 PEM; certificates are PEM. Serial numbers are 128 random bits.
// The CA is valid for 10 years by default, a leaf for 1 year; a leaf is
// never issued to outlive its CA (it would stop working with it, silently).
// NotBefore is set 5 minutes in the past so that a host whose clock is a
// little behind accepts a certificate made a moment ago. Leaves have key
// usage digital signature and both client and server auth (a proxy dials
// other proxies and is dialed). The CA may sign certificates only (path
// length 0). Keys and serial numbers come from crypto/rand (Go ignores any
// other source for keys); InitCA's clock can be set with CAOptions.Now.
//
// # Files
//
// Under a configuration folder DIR:
//
//	DIR/ca/ca.crt, DIR/ca/ca.key        the CA (CADir); ca.key never leaves this host
//	DIR/ca/control/                      the control plane's credentials (ControlDir), made by InitCA
//	DIR/ca/issued/<name>/                credentials made by Issue, to copy to the host they name
//
// A credentials folder holds ca.crt (the CA to trust), tls.crt and tls.key.
// Keys are written with mode 0600 and folders that hold keys with 0700.
// Every file is written to a temporary file beside it, synced, and renamed
// over its name, then the folder is synced: a crash leaves the old file or
// the new one. InitCA writes the CA's certificate last, so a crashed init
// leaves no ca.crt and a second init says which leftover file to remove.
// Issue replaces an existing folder's files one at a time; a crash between
// them leaves a key that does not match its certificate, which Load reports
// ("issue it again"). Files are read with a size cap, and anything that is
// not a regular file (a FIFO, a device, a folder) is refused without being
// read, so that a hostile folder gives an error naming the file, never a
// hang. Load does not check validity dates: a handshake refuses an expired
// certificate, and NotAfter lets a caller warn before.
//
// This package never logs, and never puts a private key in an error or a
// string.
package pki
