package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func init() {
	register(&command{
		name: "ca",
		summary: `Make this installation's certificate authority and certificates for its proxies.

  ferry ca init [--name NAME]         make the CA in DIR/ca and the control
                                      plane's credentials in DIR/ca/control
                                      (named control unless --name)
  ferry ca issue NAME [--role ROLE]   issue a certificate for the proxy NAME
      [--host H]... [--days N]        (or, with --role control, a control
      [--out FOLDER]                  plane) into DIR/ca/issued/NAME, to copy
                                      to its host
  ferry ca list [--json]              the certificates under DIR/ca: role,
                                      name, expiry; warns of those that expire
                                      within 30 days

DIR is the configuration folder. Every connection between the control
plane and proxies, and between proxies, is TLS 1.3 with a certificate at
both ends, issued by this CA: a certificate names a role and a name, and a
proxy is dialed by its name, whatever its address. ca.key signs every
certificate: keep it on this host, readable by you only, and backed up.
'ca list' exits 1 when a certificate has expired or is damaged.`,
		usage: "ferry [--config DIR] ca init|issue|list [arguments]",
		setup: noFlags(runCA),
		subs: []*command{{
			name:    "init",
			summary: "Make the CA in DIR/ca and the control plane's credentials in DIR/ca/control.",
			usage:   "ferry [--config DIR] ca init [--name NAME] [--host H]...",
			setup: func(fs *pflag.FlagSet) runFunc {
				name := fs.String("name", pki.DefaultControlName, "the control plane's `NAME` in its certificate")
				hosts := fs.StringArray("host", nil, "a DNS name or IP `address` ferry server's API is reached at, for tools such as curl (this host's name and loopback are always in); repeatable")
				return func(e *env, args []string) error { return runCAInit(e, args, *name, *hosts) }
			},
		}, {
			name:    "issue",
			summary: "Issue a certificate for a proxy (or a control plane) into DIR/ca/issued/NAME.",
			usage:   "ferry [--config DIR] ca issue NAME [--role proxy|control] [--host H]... [--days N] [--out FOLDER]",
			setup: func(fs *pflag.FlagSet) runFunc {
				var f caIssueFlags
				fs.StringVar(&f.role, "role", string(pki.RoleProxy), "the `ROLE` the certificate names: proxy or control")
				fs.StringArrayVar(&f.hosts, "host", nil, "a DNS name or IP `address` to add to the certificate, for other tools (ferry needs none); repeatable")
				fs.IntVar(&f.days, "days", int(pki.DefaultValidity/(24*time.Hour)), "how many `N` days the certificate is valid")
				fs.StringVar(&f.out, "out", "", "the `FOLDER` to write the credentials to (default DIR/ca/issued/NAME)")
				return func(e *env, args []string) error { return runCAIssue(e, args, f) }
			},
		}, {
			name:    "list",
			summary: "List the certificates under DIR/ca: role, name, expiry and state.",
			usage:   "ferry [--config DIR] ca list [--json]",
			setup: func(fs *pflag.FlagSet) runFunc {
				asJSON := fs.Bool("json", false, "print JSON")
				return func(e *env, args []string) error { return runCAList(e, args, *asJSON) }
			},
		}},
	})
	for _, sub := range commands["ca"].subs {
		// What 'ferry help ca' says of all three, after each one's line.
		sub.summary += "\n\n" + commands["ca"].summary
	}
}

// runCA is 'ferry ca' without a subcommand it knows.
func runCA(e *env, args []string) error {
	if len(args) == 0 {
		return usagef("name what to do: init, issue or list")
	}
	if args[0] == "help" {
		commands["ca"].help(e.stdout, nil)
		return nil
	}
	return usagef("unknown subcommand %q: init, issue or list", args[0])
}

// apiHosts are the names of this host the control plane's certificate
// holds, besides those asked for: tools that check the certificate of
// ferry server's API by address (curl, Prometheus) then accept it here.
func apiHosts(extra []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "localhost" && strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == "" && !strings.HasPrefix(h, "-") {
		hosts = append(hosts, h)
	}
	for _, h := range extra {
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func runCAInit(e *env, pos []string, name string, hosts []string) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q (use --config DIR to name the configuration folder)", pos[0])
	}
	if err := pki.CheckName(name); err != nil {
		return asUsage(err)
	}
	caDir := pki.CADir(e.configDir)
	if err := pki.InitCA(caDir, pki.CAOptions{Name: name, Hosts: apiHosts(hosts)}); err != nil {
		return err
	}
	c, err := pki.Load(pki.ControlDir(e.configDir))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "made the CA %q in %s: keep %s on this host, readable by you only, and backed up\n",
		c.CA().Subject.CommonName, caDir, pki.CAKeyFile)
	fmt.Fprintf(e.stdout, "made the credentials of %s, valid until %s, in %s\n", c.Identity(), when(c.NotAfter()), pki.ControlDir(e.configDir))
	fmt.Fprintln(e.stdout, "next, for each proxy: ferry ca issue NAME")
	return nil
}

// caIssueFlags are the flags of 'ferry ca issue'.
type caIssueFlags struct {
	role  string
	hosts []string
	days  int
	out   string
}

func runCAIssue(e *env, pos []string, f caIssueFlags) error {
	if len(pos) != 1 {
		return usagef("name the proxy (or control plane) to issue a certificate for, once")
	}
	id := pki.Identity{Role: pki.Role(f.role), Name: pos[0]}
	if err := id.Check(); err != nil {
		return asUsage(err)
	}
	if f.days < 1 {
		return usagef("--days must be at least 1, not %d", f.days)
	}
	dir := f.out
	var err error
	if dir == "" {
		dir = pki.IssuedDir(e.configDir, id.Name)
	} else if dir, err = filepath.Abs(dir); err != nil {
		return usagef("--out %q: %v", f.out, err)
	}
	if err := pki.Issue(pki.CADir(e.configDir), id, f.hosts, time.Duration(f.days)*24*time.Hour, dir); err != nil {
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return asUsage(err)
		}
		return err
	}
	c, err := pki.Load(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "issued a certificate for %s, valid until %s, in %s\n", c.Identity(), when(c.NotAfter()), dir)
	if id.Role == pki.RoleProxy {
		fmt.Fprintf(e.stdout, "copy that folder to the proxy's host (%s is its secret: keep it readable by the proxy only) and start the proxy there with:\n", pki.KeyFile)
		fmt.Fprintf(e.stdout, "  ferry proxy --tls /where/you/copied/%s\n", filepath.Base(dir))
	} else {
		fmt.Fprintf(e.stdout, "copy that folder to the control plane's host (%s is its secret), as ca/control in its configuration folder\n", pki.KeyFile)
	}
	return nil
}

// caEntry is one certificate of 'ferry ca list --json'.
type caEntry struct {
	Role     string    `json:"role"` // "ca" for the CA itself
	Name     string    `json:"name"`
	NotAfter time.Time `json:"not_after"`
	// State: valid, expiring (within 30 days), expired, or damaged (the
	// folder's files do not work together; Problem says why).
	State   string `json:"state"`
	Problem string `json:"problem,omitempty"`
	Folder  string `json:"folder"`
}

func runCAList(e *env, pos []string, asJSON bool) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	entries, err := pki.List(pki.CADir(e.configDir))
	if err != nil {
		return err
	}
	now := time.Now()
	list := make([]caEntry, 0, len(entries))
	failed := false
	for _, en := range entries {
		ce := caEntry{Role: "ca", Name: en.Subject, NotAfter: en.NotAfter, Folder: en.Dir, State: "valid"}
		if !en.CA {
			ce.Role, ce.Name = string(en.Identity.Role), en.Identity.Name
			if ce.Name == "" {
				ce.Role, ce.Name = "?", filepath.Base(en.Dir)
			}
		}
		switch {
		case en.Problem != nil:
			ce.State, ce.Problem = "damaged", en.Problem.Error()
			failed = true
		case !now.Before(en.NotAfter):
			ce.State = "expired"
			failed = true
		case en.NotAfter.Sub(now) < pki.WarnBefore:
			ce.State = "expiring"
		}
		list = append(list, ce)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLE\tNAME\tEXPIRES\tSTATE\tFOLDER")
		for _, ce := range list {
			expires := "-"
			if !ce.NotAfter.IsZero() {
				expires = ce.NotAfter.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ce.Role, ce.Name, expires, ce.State, relative(e.configDir, ce.Folder))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		flush(e.stdout)
		for _, ce := range list {
			if w := caWarning(ce, now); w != "" {
				fmt.Fprintf(e.stderr, "warning: %s\n", w)
			}
		}
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

// caWarning says what to do about a certificate of 'ferry ca list', or
// "" when nothing.
func caWarning(ce caEntry, now time.Time) string {
	what := fmt.Sprintf("%s %q", ce.Role, ce.Name)
	renew := fmt.Sprintf("issue a new one with 'ferry ca issue %s' and copy it to its host", ce.Name)
	if ce.Role == string(pki.RoleControl) {
		renew = fmt.Sprintf("issue a new one with 'ferry ca issue %s --role control' and copy it to its host's ca/control", ce.Name)
	}
	if ce.Role == "ca" {
		what = fmt.Sprintf("the CA %q", ce.Name)
		renew = "make a new CA with 'ferry ca init' in a new configuration folder and issue every certificate again"
	}
	switch ce.State {
	case "damaged":
		return fmt.Sprintf("%s in %s: %s", what, ce.Folder, ce.Problem)
	case "expired":
		return fmt.Sprintf("%s expired on %s: %s", what, when(ce.NotAfter), renew)
	case "expiring":
		return fmt.Sprintf("%s expires in %s, on %s: %s", what, count(int(ce.NotAfter.Sub(now)/(24*time.Hour)), "day"), when(ce.NotAfter), renew)
	}
	return ""
}

func when(t time.Time) string { return t.Local().Format(time.DateTime) }

// relative is path within dir when it is there, else path.
func relative(dir, path string) string {
	if rel, err := filepath.Rel(dir, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}

// asUsage makes an invalid-argument error of a package a usage error.
func asUsage(err error) error {
	return usagef("%s", strings.TrimSuffix(err.Error(), ": "+errdefs.ErrInvalidArgument.Error()))
}
