package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Explain turns the error of a TLS handshake or of a dial that made one,
// on either end, into one sentence an operator can act on: a peer that
// does not speak TLS, a certificate of another CA, an expired certificate
// (and when it expired), a peer of the wrong role or name, a missing
// certificate. It returns "" when it has nothing to add. It reads typed
// errors where it has them, and their messages where they were flattened
// (gRPC passes handshake errors on as text).
func Explain(err error) string {
	if err == nil {
		return ""
	}
	if ie, ok := errors.AsType[*IdentityError](err); ok {
		return explainIdentity(ie)
	}
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		var cert *x509.Certificate
		if len(cve.UnverifiedCertificates) > 0 {
			cert = cve.UnverifiedCertificates[0]
		}
		if s := explainVerify(cert, cve.Err); s != "" {
			return s
		}
	}
	if s := explainVerify(nil, err); s != "" {
		return s
	}
	msg := err.Error()
	for _, t := range byText {
		if strings.Contains(msg, t.fragment) {
			return t.sentence
		}
	}
	if m := identityText.FindStringSubmatch(msg); m != nil {
		got := m[1] + " " + m[2]
		if m[3] != "" {
			return fmt.Sprintf("The server at that address is %s, not %s: fix the address configured for it, or give that host its own credentials.", got, m[3]+" "+m[4])
		}
		return fmt.Sprintf("The peer's certificate names %s, but only %s may connect here: give that host the credentials of its role ('ferry ca issue NAME --role ROLE').", got, m[5])
	}
	if m := expiredText.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("A certificate expired on %s: issue a new one with 'ferry ca issue NAME' and copy it to its host.", m[1])
	}
	return ""
}

func explainIdentity(ie *IdentityError) string {
	if ie.Accept != nil {
		return fmt.Sprintf("The peer's certificate names %s, but only %s may connect here: give that host the credentials of its role ('ferry ca issue %s --role ROLE').",
			ie.Got, roleList(ie.Accept), ie.Got.Name)
	}
	return fmt.Sprintf("The server at that address is %s, not %s: fix the address configured for %s, or give that host its own credentials.", ie.Got, ie.Want, ie.Want)
}

// explainVerify explains a verification error of the peer's certificate
// cert (nil when unknown).
func explainVerify(cert *x509.Certificate, err error) string {
	who := "The peer's certificate"
	if cert != nil {
		if id, e := identityOf(cert); e == nil {
			who = fmt.Sprintf("The peer's certificate (%s)", id)
		} else {
			who = fmt.Sprintf("The peer's certificate (%q)", cert.Subject.CommonName)
		}
	}
	if uae, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		issuer := ""
		if uae.Cert != nil {
			issuer = fmt.Sprintf(" but by %q", uae.Cert.Issuer.CommonName)
		}
		return fmt.Sprintf("%s was not issued by this installation's CA%s: issue it with 'ferry ca issue' of this installation and copy the folder to that host.", who, issuer)
	}
	if cie, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		switch cie.Reason {
		case x509.Expired:
			c := cie.Cert
			if c == nil {
				c = cert
			}
			if c == nil {
				return ""
			}
			if strings.Contains(cie.Detail, " is before ") {
				return fmt.Sprintf("%s is not valid before %s: check the clocks of both hosts.", who, stamp(c.NotBefore))
			}
			if c.IsCA {
				return fmt.Sprintf("The CA %q that issued the peer's certificate expired on %s: make a new CA and issue every certificate again.", c.Subject.CommonName, stamp(c.NotAfter))
			}
			return fmt.Sprintf("%s expired on %s: issue a new one with 'ferry ca issue %s' and copy it to that host.", who, stamp(c.NotAfter), c.Subject.CommonName)
		case x509.IncompatibleUsage:
			return fmt.Sprintf("%s is not one for ferry's connections (its key usage): issue it with 'ferry ca issue'.", who)
		}
	}
	return ""
}

func stamp(t time.Time) string { return t.UTC().Format(time.DateTime + " MST") }

// byText explains errors by a fragment of their message: the alerts a
// peer sends (their type is not exported) and errors flattened to text.
var byText = []struct{ fragment, sentence string }{
	{"first record does not look like a TLS handshake",
		"The peer does not speak TLS: it is not a ferry endpoint with TLS on, or another program listens at that address."},
	{"remote error: tls: unknown certificate authority",
		"The peer does not trust this host's certificate: it was issued by another installation's CA; use credentials issued by the peer's installation ('ferry ca issue')."},
	{"remote error: tls: expired certificate",
		"The peer says this host's certificate has expired or is not valid yet: issue a new one with 'ferry ca issue' and install it here, and check this host's clock."},
	{"remote error: tls: certificate required",
		"The peer requires a certificate and this host sent none: give this host its ferry credentials."},
	{"remote error: tls: bad certificate",
		"The peer refused this host's certificate: its role or name is not one the peer accepts there, or it failed the peer's checks (the peer's log says which)."},
	{"client didn't provide a certificate",
		"The peer sent no certificate: it runs without ferry credentials, or it is not ferry."},
	{"protocol version not supported",
		"The peer does not speak TLS 1.3, which ferry requires: upgrade it."},
	{"offered only unsupported versions",
		"The peer does not speak TLS 1.3, which ferry requires: upgrade it."},
	{"certificate signed by unknown authority",
		"The peer's certificate was not issued by this installation's CA: issue it with 'ferry ca issue' of this installation and copy the folder to that host."},
}

// identityText and expiredText find an IdentityError and an expired
// certificate in a flattened message.
var (
	identityText = regexp.MustCompile(`peer certificate names (control|proxy) ("[^"]*")(?:, want (control|proxy) ("[^"]*")|; only ([a-z ]+?) may connect)`)
	expiredText  = regexp.MustCompile(`certificate has expired or is not yet valid: current time \S+ is after (\S+)`)
)
