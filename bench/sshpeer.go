//go:build linux

package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// How the zstd | ssh peer of the full copy through proxies reaches this
// host. When `ssh 127.0.0.1` already works without a person (the
// machine's sshd, the user's keys), the peer uses it as it is. Otherwise,
// when OpenSSH's server is installed, the bench starts an sshd of its own
// for the peer's run alone: as the current user, in the foreground, on a
// free port of 127.0.0.1, with a host key, a client key, an
// authorized_keys and a configuration it makes in the scratch folder. The
// machine's ssh setup (/etc/ssh, ~/.ssh, the running sshd) is neither read
// by that sshd and its client (-f and -F none) nor changed; the one thing
// made outside the scratch folder is sshd's privilege separation
// directory, when sshd runs as root and says it is missing.
//
// Neither side is weakened: the client and the server offer OpenSSH's
// default ciphers, MACs and key exchanges, compression stays off (its
// default), and the cipher ssh negotiated is reported.

const (
	// sshdStart bounds how long the bench's own sshd may take to accept
	// connections; sshCheckTime how long the check through ssh may take.
	sshdStart    = 10 * time.Second
	sshCheckTime = 15 * time.Second
	// sshdStop is how long sshd has to end after SIGTERM before SIGKILL.
	sshdStop = 5 * time.Second
	// sshdAttempts is how many times the bench starts its sshd when the
	// reason it exited can be fixed (the port taken meanwhile, the
	// privilege separation directory missing).
	sshdAttempts = 3
	// usrSbinSSHD is where Debian puts sshd, which is not on a user's PATH.
	usrSbinSSHD = "/usr/sbin/sshd"
)

// sshRoute is how the peer's ssh reaches 127.0.0.1.
type sshRoute struct {
	// opts are ssh's options before the host.
	opts []string
	// sshd says which sshd answers, for the report.
	sshd string
	// cipher is what ssh negotiated for the data (client to server);
	// server is the far side's software version; both from ssh -v.
	cipher, server string
	own            *ownSSHD // nil: the machine's sshd
}

// close stops the bench's own sshd, if the route has one.
func (r *sshRoute) close() {
	if r != nil && r.own != nil {
		r.own.stop()
	}
}

// sshFiles are the files of the bench's own sshd, all in one folder.
type sshFiles struct {
	Dir            string
	HostKey        string // the host's private key; .pub beside it
	ClientKey      string // the client's private key; .pub beside it
	AuthorizedKeys string // the client's public key
	KnownHosts     string // the host's public key, for the client
	Config         string // sshd_config
	PidFile        string
	Log            string // sshd's standard error (-e)
}

func sshFilesIn(dir string) sshFiles {
	return sshFiles{
		Dir:            dir,
		HostKey:        filepath.Join(dir, "host_ed25519"),
		ClientKey:      filepath.Join(dir, "client_ed25519"),
		AuthorizedKeys: filepath.Join(dir, "authorized_keys"),
		KnownHosts:     filepath.Join(dir, "known_hosts"),
		Config:         filepath.Join(dir, "sshd_config"),
		PidFile:        filepath.Join(dir, "sshd.pid"),
		Log:            filepath.Join(dir, "sshd.log"),
	}
}

// sshdConfig is the configuration of the bench's own sshd: 127.0.0.1 and
// port only, its own host key, only the client key of the scratch folder
// and only for login, the current user. StrictModes is off because the
// scratch folder's parents (/tmp) are writable by others, which sshd's
// strict modes refuse; UsePAM is off because PAM's session modules need
// root. Ciphers, MACs and key exchanges are not named: OpenSSH's defaults.
func sshdConfig(f sshFiles, port int, login string) string {
	return fmt.Sprintf(`# Written by ferry-bench: its own sshd for the zstd | ssh peer.
ListenAddress 127.0.0.1
Port %d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
AllowUsers %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PrintMotd no
PrintLastLog no
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
`, port, f.HostKey, f.PidFile, f.AuthorizedKeys, login)
}

// ownSSHOpts are the ssh client's options for the bench's own sshd: no
// configuration file (-F none: OpenSSH's defaults, whatever ~/.ssh/config
// or /etc/ssh/ssh_config say), the scratch client key alone, the host key
// checked against the scratch known_hosts.
func ownSSHOpts(f sshFiles, port int) []string {
	return []string{"-F", "none", "-p", strconv.Itoa(port), "-i", f.ClientKey,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + f.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null"}
}

// machineSSHOpts are the options of the check and the peer through the
// machine's sshd: the user's own ssh setup, no person asked.
var machineSSHOpts = []string{"-o", "BatchMode=yes", "-o", "ConnectTimeout=5"}

// knownHostsLine is the known_hosts line of a host key (a .pub file's
// text) for 127.0.0.1 at port.
func knownHostsLine(port int, hostPub string) string {
	host := "127.0.0.1"
	if port != 22 {
		host = fmt.Sprintf("[127.0.0.1]:%d", port)
	}
	return host + " " + strings.TrimSpace(hostPub) + "\n"
}

// sshVerbose is what ssh -v said about the connection.
type sshVerbose struct {
	Cipher string // client to server: the direction the peer's data goes
	Server string // the far side's software version
}

// parseSSHVerbose reads ssh -v's standard error: the "kex:
// client->server cipher:" and "remote software version" debug lines.
func parseSSHVerbose(stderr string) sshVerbose {
	var v sshVerbose
	for _, line := range strings.Split(stderr, "\n") {
		if _, rest, ok := strings.Cut(line, "kex: client->server cipher: "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				v.Cipher = f[0]
			}
		}
		if _, rest, ok := strings.Cut(line, "remote software version "); ok {
			v.Server = strings.TrimSpace(rest)
		}
	}
	return v
}

// sshFailure is why an ssh -v failed: the last lines of its standard
// error that are not debug lines.
func sshFailure(stderr string) string {
	var keep []string
	for _, line := range strings.Split(stderr, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "debug") && !strings.HasPrefix(line, "OpenSSH_") {
			keep = append(keep, line)
		}
	}
	return lastLines(strings.Join(keep, "\n"), 2)
}

// shellQuote quotes s for a POSIX shell: the far side of ssh runs the
// command through the user's shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// findSSHD is the sshd the bench can start: on the PATH, else Debian's
// /usr/sbin/sshd (not on a user's PATH); "" when there is none.
func findSSHD(lookPath func(string) (string, error), executable func(string) bool) string {
	if p, err := lookPath("sshd"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs // sshd re-executes itself: it wants an absolute path
		}
	}
	if executable(usrSbinSSHD) {
		return usrSbinSSHD
	}
	return ""
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// sshSkipReason is why the peer cannot run: machine is why `ssh
// 127.0.0.1` did not work, sshd the sshd found ("" for none), own why the
// bench's own sshd did not work.
func sshSkipReason(machine, sshd string, own error) string {
	if sshd == "" {
		return fmt.Sprintf("no sshd: apt-get install openssh-server (and ssh 127.0.0.1 does not work: %s)", machine)
	}
	return fmt.Sprintf("the bench's own sshd (%s) did not work: %v (and ssh 127.0.0.1 does not work: %s)", sshd, own, machine)
}

// missingPrivsep is the directory sshd said it misses ("Missing privilege
// separation directory: DIR", as root), or "".
func missingPrivsep(log string) string {
	const marker = "Missing privilege separation directory: "
	for _, line := range strings.Split(log, "\n") {
		if _, dir, ok := strings.Cut(line, marker); ok {
			return strings.TrimSpace(dir)
		}
	}
	return ""
}

// sshCheck runs `ssh -v OPTS 127.0.0.1 REMOTE` with no input and returns
// what ssh -v said, or an error with ssh's own reason.
func sshCheck(ctx context.Context, opts []string, remote string) (sshVerbose, error) {
	ctx, cancel := context.WithTimeout(ctx, sshCheckTime)
	defer cancel()
	args := append(append([]string{"-v"}, opts...), "127.0.0.1", remote)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	v := parseSSHVerbose(stderr.String())
	if err != nil {
		shown := append(append([]string{"ssh"}, opts...), "127.0.0.1", remote)
		return v, fmt.Errorf("%s: %w: %s", strings.Join(shown, " "), err, sshFailure(stderr.String()))
	}
	return v, nil
}

// sshRouteFor finds how the peer reaches 127.0.0.1: the machine's sshd
// when ssh to it works without a person, else the bench's own started in
// dir. It returns why neither works instead ("" when one does); zstd is
// the zstd command the far side runs. The caller closes the route.
func sshRouteFor(ctx context.Context, dir, zstd string, logf func(string, ...any)) (*sshRoute, string) {
	if _, err := exec.LookPath("ssh"); err != nil {
		return nil, "no ssh command (apt-get install openssh-client openssh-server)"
	}
	check := shellQuote(zstd) + " --version"
	v, err := sshCheck(ctx, machineSSHOpts, check)
	if err == nil {
		return &sshRoute{opts: machineSSHOpts, sshd: "the machine's sshd (ssh 127.0.0.1)", cipher: v.Cipher, server: v.Server}, ""
	}
	machine := err.Error()
	sshd := findSSHD(exec.LookPath, isExecutable)
	if sshd == "" {
		return nil, sshSkipReason(machine, "", nil)
	}
	own, err := startOwnSSHD(ctx, dir, sshd, logf)
	if err != nil {
		return nil, sshSkipReason(machine, sshd, err)
	}
	r := &sshRoute{opts: ownSSHOpts(own.files, own.port), own: own,
		sshd: fmt.Sprintf("the bench's own sshd (%s, as %s) on 127.0.0.1:%d", sshd, own.login, own.port)}
	v, err = sshCheck(ctx, r.opts, check)
	if err != nil {
		own.stop()
		return nil, sshSkipReason(machine, sshd, fmt.Errorf("%w; sshd: %s", err, lastLines(readText(own.files.Log), 3)))
	}
	r.cipher, r.server = v.Cipher, v.Server
	return r, ""
}

// ownSSHD is an sshd the bench started.
type ownSSHD struct {
	files  sshFiles
	port   int
	login  string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returned
}

// startOwnSSHD makes the keys and configuration in dir and starts
// sshdPath on a free port of 127.0.0.1, as the current user, waiting
// until it accepts connections. An sshd that exits first is started again
// when the reason can be fixed: its port taken meanwhile (another port),
// its privilege separation directory missing as root (made, mode 0755,
// and left in place: the machine's own sshd would make the same).
func startOwnSSHD(ctx context.Context, dir, sshdPath string, logf func(string, ...any)) (*ownSSHD, error) {
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("current user: %w", err)
	}
	f := sshFilesIn(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, key := range []string{f.HostKey, f.ClientKey} {
		os.Remove(key)
		os.Remove(key + ".pub")
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ferry-bench", "-f", key).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("ssh-keygen: %w: %s", err, lastLines(string(out), 2))
		}
	}
	clientPub, err := os.ReadFile(f.ClientKey + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.AuthorizedKeys, clientPub, 0o600); err != nil {
		return nil, err
	}
	hostPub, err := os.ReadFile(f.HostKey + ".pub")
	if err != nil {
		return nil, err
	}
	var last error
	for range sshdAttempts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(f.KnownHosts, []byte(knownHostsLine(port, string(hostPub))), 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(f.Config, []byte(sshdConfig(f, port, u.Username)), 0o600); err != nil {
			return nil, err
		}
		s := &ownSSHD{files: f, port: port, login: u.Username}
		err = s.start(ctx, sshdPath)
		if err == nil {
			return s, nil
		}
		last = err
		log := readText(f.Log)
		switch {
		case strings.Contains(log, "Address already in use"):
			continue
		case missingPrivsep(log) != "" && os.Geteuid() == 0:
			priv := missingPrivsep(log)
			if err := os.MkdirAll(priv, 0o755); err != nil {
				return nil, fmt.Errorf("%w; make %s: %w", last, priv, err)
			}
			logf("two proxies: made %s, the privilege separation directory sshd needs as root", priv)
			continue
		}
		return nil, err
	}
	return nil, last
}

// start starts sshd in the foreground and waits until its port accepts a
// connection, sshd exits, or sshdStart passes.
func (s *ownSSHD) start(ctx context.Context, sshdPath string) error {
	log, err := os.Create(s.files.Log)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd = exec.Command(sshdPath, "-D", "-e", "-f", s.files.Config)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	// A harness killed mid-run leaves no sshd listening.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", sshdPath, err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	deadline := time.NewTimer(sshdStart)
	defer deadline.Stop()
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited (%v): %s", sshdPath, s.cmd.ProcessState, lastLines(readText(s.files.Log), 3))
		case <-deadline.C:
			s.stop()
			return fmt.Errorf("%s did not accept connections on %s within %s: %s", sshdPath, addr, sshdStart, lastLines(readText(s.files.Log), 3))
		case <-ctx.Done():
			s.stop()
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// stop ends sshd and waits for it: SIGTERM, then SIGKILL after sshdStop.
// Sessions still running end when their connections do.
func (s *ownSSHD) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	endProcess(s.cmd.Process, s.exited, sshdStop)
	s.cmd = nil
}

// endProcess sends p SIGTERM and waits until exited is closed, sending
// SIGKILL after grace.
func endProcess(p *os.Process, exited <-chan struct{}, grace time.Duration) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		p.Kill()
		<-exited
	}
}

// freePort is a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readText(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
