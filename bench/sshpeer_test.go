//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSSHDConfig(t *testing.T) {
	f := sshFilesIn("/scratch/sshd")
	conf := sshdConfig(f, 40222, "alice")
	got := map[string]string{}
	for _, line := range strings.Split(conf, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("line %q: want KEYWORD VALUE", line)
		}
		if _, dup := got[key]; dup {
			t.Errorf("%s given twice", key)
		}
		got[key] = val
	}
	for key, want := range map[string]string{
		"ListenAddress":          "127.0.0.1",
		"Port":                   "40222",
		"HostKey":                "/scratch/sshd/host_ed25519",
		"AuthorizedKeysFile":     "/scratch/sshd/authorized_keys",
		"PidFile":                "/scratch/sshd/sshd.pid",
		"AllowUsers":             "alice",
		"PasswordAuthentication": "no",
		"StrictModes":            "no",
		"UsePAM":                 "no",
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
	// The peer is not weakened: the algorithms are OpenSSH's defaults, and
	// nothing of the machine's setup is included.
	for _, key := range []string{"Ciphers", "MACs", "KexAlgorithms", "Compression", "Include"} {
		if v, ok := got[key]; ok {
			t.Errorf("%s %s: the bench's sshd must keep OpenSSH's default", key, v)
		}
	}
}

func TestOwnSSHOpts(t *testing.T) {
	f := sshFilesIn("/scratch/sshd")
	opts := ownSSHOpts(f, 40222)
	joined := " " + strings.Join(opts, " ") + " "
	for _, want := range []string{" -F none ", " -p 40222 ", " -i /scratch/sshd/client_ed25519 ", " BatchMode=yes ",
		" IdentitiesOnly=yes ", " StrictHostKeyChecking=yes ", " UserKnownHostsFile=/scratch/sshd/known_hosts "} {
		if !strings.Contains(joined, want) {
			t.Errorf("options %q lack %q", joined, strings.TrimSpace(want))
		}
	}
	if slices.Contains(opts, "-c") || strings.Contains(joined, "Ciphers") || strings.Contains(joined, "Compression") || slices.Contains(opts, "-C") {
		t.Errorf("options %q choose a cipher or compression: the peer must use OpenSSH's defaults", joined)
	}
}

func TestKnownHostsLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		port int
		pub  string
		want string
	}{
		{"another port is bracketed", 40222, "ssh-ed25519 AAAAC3 ferry-bench\n", "[127.0.0.1]:40222 ssh-ed25519 AAAAC3 ferry-bench\n"},
		{"port 22 is not", 22, "ssh-ed25519 AAAAC3", "127.0.0.1 ssh-ed25519 AAAAC3\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := knownHostsLine(tc.port, tc.pub); got != tc.want {
				t.Errorf("knownHostsLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseSSHVerbose(t *testing.T) {
	const verbose = `OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026
debug1: Reading configuration data /etc/ssh/ssh_config
debug1: Connecting to 127.0.0.1 [127.0.0.1] port 40222.
debug1: Local version string SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10
debug1: Remote protocol version 2.0, remote software version OpenSSH_9.2p1 Debian-2+deb12u10
debug1: kex: algorithm: sntrup761x25519-sha512@openssh.com
debug1: kex: server->client cipher: aes128-ctr MAC: umac-64-etm@openssh.com compression: none
debug1: kex: client->server cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none
Authenticated to 127.0.0.1 ([127.0.0.1]:40222) using "publickey".
`
	for _, tc := range []struct {
		name, stderr string
		want         sshVerbose
	}{
		{"a connection: the client-to-server cipher", verbose, sshVerbose{Cipher: "chacha20-poly1305@openssh.com", Server: "OpenSSH_9.2p1 Debian-2+deb12u10"}},
		{"refused: nothing known", "debug1: Connecting to 127.0.0.1 port 22.\nssh: connect to host 127.0.0.1 port 22: Connection refused\n", sshVerbose{}},
		{"empty", "", sshVerbose{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseSSHVerbose(tc.stderr); got != tc.want {
				t.Errorf("parseSSHVerbose = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSSHFailure(t *testing.T) {
	for _, tc := range []struct{ name, stderr, want string }{
		{"refused", "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19\ndebug1: Connecting to 127.0.0.1 port 22.\nssh: connect to host 127.0.0.1 port 22: Connection refused\n",
			"ssh: connect to host 127.0.0.1 port 22: Connection refused"},
		{"the last two lines that are not debug", "debug1: a\nHost key verification failed.\ndebug1: b\nroot@127.0.0.1: Permission denied (publickey).\ndebug2: c\n",
			"Host key verification failed.\nroot@127.0.0.1: Permission denied (publickey)."},
		{"only debug", "debug1: a\ndebug3: b\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sshFailure(tc.stderr); got != tc.want {
				t.Errorf("sshFailure = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"/usr/bin/zstd", "/tmp/ferry-bench-1/ssh-copy.img", "it's", "a b;$(echo no)`x`\"'", ""} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh printed %q, %v for %q (quoted %s)", out, err, s, shellQuote(s))
		}
	}
}

func TestFindSSHD(t *testing.T) {
	found := func(p string) func(string) (string, error) {
		return func(string) (string, error) { return p, nil }
	}
	notFound := func(string) (string, error) { return "", exec.ErrNotFound }
	for _, tc := range []struct {
		name       string
		lookPath   func(string) (string, error)
		usrSbinSSH bool
		want       string
	}{
		{"on the PATH", found("/usr/local/sbin/sshd"), true, "/usr/local/sbin/sshd"},
		{"Debian's, not on a user's PATH", notFound, true, usrSbinSSHD},
		{"none", notFound, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := findSSHD(tc.lookPath, func(p string) bool { return p == usrSbinSSHD && tc.usrSbinSSH })
			if got != tc.want {
				t.Errorf("findSSHD = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSSHSkipReason(t *testing.T) {
	const machine = "ssh -o BatchMode=yes 127.0.0.1 zstd --version: exit status 255: ssh: connect to host 127.0.0.1 port 22: Connection refused"
	for _, tc := range []struct {
		name string
		sshd string
		own  error
		want []string
	}{
		{"no sshd: how to get one, and why the machine's ssh did not do", "", nil,
			[]string{"no sshd: apt-get install openssh-server", "Connection refused"}},
		{"the bench's own sshd failed: which, and its words", usrSbinSSHD, errors.New("/usr/sbin/sshd exited (exit status 255): Missing privilege separation directory: /run/sshd"),
			[]string{"the bench's own sshd (/usr/sbin/sshd) did not work", "Missing privilege separation directory", "Connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sshSkipReason(machine, tc.sshd, tc.own)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("sshSkipReason = %q, want it to say %q", got, w)
				}
			}
		})
	}
}

func TestMissingPrivsep(t *testing.T) {
	for _, tc := range []struct{ name, log, want string }{
		{"Debian's", "Missing privilege separation directory: /run/sshd\n", "/run/sshd"},
		{"another system's, after other lines", "Server listening on 127.0.0.1 port 1.\nMissing privilege separation directory: /var/empty\n", "/var/empty"},
		{"another failure", "Bind to port 40222 on 127.0.0.1 failed: Address already in use.\nCannot bind any address.\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := missingPrivsep(tc.log); got != tc.want {
				t.Errorf("missingPrivsep = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSSHDetails(t *testing.T) {
	if got := sshDetails("OpenSSH_9.2p1", "chacha20-poly1305@openssh.com"); got != ", OpenSSH_9.2p1, cipher chacha20-poly1305@openssh.com" {
		t.Errorf("sshDetails = %q", got)
	}
	if got := sshDetails("", ""); got != "" {
		t.Errorf("sshDetails of nothing = %q", got)
	}
}

// needSSHClient skips a test that runs ssh or ssh-keygen where they are
// not installed.
func needSSHClient(t *testing.T) {
	t.Helper()
	for _, c := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("no %s command: apt-get install openssh-client", c)
		}
	}
}

// TestOwnSSHDExits starts a stand-in for sshd that exits as sshd does
// when it cannot start: the bench reports its last lines, and makes the
// privilege separation directory it names when root.
func TestOwnSSHDExits(t *testing.T) {
	needSSHClient(t)
	dir := t.TempDir()
	priv := filepath.Join(dir, "privsep")
	fake := filepath.Join(dir, "sshd")
	script := "#!/bin/sh\nif [ -d " + shellQuote(priv) + " ]; then echo 'sshd: fatal: it still fails' >&2; exit 255; fi\n" +
		"echo 'Missing privilege separation directory: " + priv + "' >&2\nexit 255\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, format) }
	s, err := startOwnSSHD(context.Background(), filepath.Join(dir, "own"), fake, logf)
	if err == nil {
		s.stop()
		t.Fatal("a stand-in that exits started")
	}
	_, made := os.Stat(priv)
	if os.Geteuid() == 0 {
		if made != nil || !strings.Contains(err.Error(), "it still fails") || len(logged) != 1 {
			t.Errorf("as root: error %q, directory made: %v, logged %q; want the directory made, logged, and the second failure", err, made == nil, logged)
		}
	} else if made == nil || !strings.Contains(err.Error(), "Missing privilege separation directory") {
		t.Errorf("not root: error %q, directory made: %v; want sshd's words and no directory", err, made == nil)
	}
	if !strings.Contains(err.Error(), "exited") {
		t.Errorf("error %q does not say sshd exited", err)
	}
}

// TestOwnSSHD starts the bench's own sshd, pipes a few MiB through ssh
// to it, and stops it; it needs OpenSSH's server and client.
func TestOwnSSHD(t *testing.T) {
	needSSHClient(t)
	sshd := findSSHD(exec.LookPath, isExecutable)
	if sshd == "" {
		t.Skip("no sshd: apt-get install openssh-server")
	}
	ctx := context.Background()
	dir := t.TempDir()
	s, err := startOwnSSHD(ctx, filepath.Join(dir, "own"), sshd, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	opts := ownSSHOpts(s.files, s.port)
	v, err := sshCheck(ctx, opts, "true")
	if err != nil {
		t.Fatal(err)
	}
	if v.Cipher == "" || v.Cipher == "none" || v.Server == "" {
		t.Errorf("ssh -v said cipher %q, server %q", v.Cipher, v.Server)
	}
	t.Logf("sshd %s on port %d, %s, cipher %s", sshd, s.port, v.Server, v.Cipher)

	data := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	out := filepath.Join(dir, "out")
	args := append(append([]string{}, opts...), "127.0.0.1", "cat > "+shellQuote(out))
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = bytes.NewReader(data)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh: %v: %s\nsshd: %s", err, msg, readText(s.files.Log))
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the far side wrote %d bytes (%v), not the %d sent", len(got), err, len(data))
	}

	exited, port := s.exited, s.port
	s.stop()
	select {
	case <-exited:
	default:
		t.Error("stop returned before sshd exited")
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after stop", port)
	}
}

// TestSSHRoute finds the route the peer would take (the machine's sshd,
// or the bench's own) and runs zstd on the far side through it.
func TestSSHRoute(t *testing.T) {
	needSSHClient(t)
	zstd, err := exec.LookPath("zstd")
	if err != nil {
		t.Skip("no zstd command: apt-get install zstd")
	}
	if findSSHD(exec.LookPath, isExecutable) == "" {
		t.Skip("no sshd: apt-get install openssh-server")
	}
	r, why := sshRouteFor(context.Background(), t.TempDir(), zstd, t.Logf)
	if why != "" {
		t.Fatal(why)
	}
	defer r.close()
	if r.sshd == "" || r.cipher == "" {
		t.Errorf("route %+v: which sshd, and the cipher, should be known", r)
	}
	t.Logf("through %s%s", r.sshd, sshDetails(r.server, r.cipher))
}
