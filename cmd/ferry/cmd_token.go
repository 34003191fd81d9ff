package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/server"
)

func init() {
	register(&command{
		name: "token",
		summary: `Make, list and revoke the tokens that may call ferry server's API.

  ferry token create NAME [--role read|operator]   make a token and print its
                                                   secret, once
  ferry token list [--json]                        the tokens: name, role, made
  ferry token revoke NAME                          delete a token

A read token may only read (GET): for dashboards and Prometheus. An
operator token may also act (run a job). Only each secret's SHA-256 is
kept, in DIR/ca/tokens: a lost secret cannot be shown again; revoke the
token and make another. A running server sees a token made or revoked
within 2 seconds (at once on SIGHUP). A client with the control plane's certificate
(the CLI beside the configuration) needs no token.`,
		usage: "ferry [--config DIR] token create|list|revoke [arguments]",
		setup: noFlags(func(e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name what to do: create, list or revoke")
			}
			return usagef("unknown subcommand %q: create, list or revoke", args[0])
		}),
		subs: []*command{{
			name:    "create",
			summary: "Make a token for ferry server's API and print its secret, once.",
			usage:   "ferry [--config DIR] token create NAME [--role read|operator]",
			setup: func(fs *pflag.FlagSet) runFunc {
				role := fs.String("role", string(server.RoleRead), "what the token may do: `read` or operator")
				return func(e *env, args []string) error {
					if len(args) != 1 {
						return usagef("name the token")
					}
					secret, err := server.CreateToken(server.TokensDir(e.configDir), args[0], server.Role(*role))
					if err != nil {
						return err
					}
					fmt.Fprintln(e.stdout, secret)
					fmt.Fprintf(e.stderr, "token %s (%s) made; its secret, above, is shown this once: send it as \"Authorization: Bearer <secret>\"\n", args[0], *role)
					return nil
				}
			},
		}, {
			name:    "list",
			summary: "List the tokens of ferry server's API: name, role, when made.",
			usage:   "ferry [--config DIR] token list [--json]",
			setup: func(fs *pflag.FlagSet) runFunc {
				asJSON := fs.Bool("json", false, "print JSON")
				return func(e *env, args []string) error {
					if len(args) > 0 {
						return usagef("unexpected argument %q", args[0])
					}
					tokens, err := server.Tokens(server.TokensDir(e.configDir))
					if err != nil {
						return err
					}
					if *asJSON {
						type entry struct {
							Name    string      `json:"name"`
							Role    server.Role `json:"role"`
							Created time.Time   `json:"created"`
						}
						out := []entry{}
						for _, t := range tokens {
							out = append(out, entry{t.Name, t.Role, t.Created})
						}
						enc := json.NewEncoder(e.stdout)
						enc.SetIndent("", "  ")
						return enc.Encode(out)
					}
					if len(tokens) == 0 {
						fmt.Fprintln(e.stdout, "no tokens; make one with 'ferry token create NAME'")
						return nil
					}
					tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tROLE\tMADE")
					for _, t := range tokens {
						fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Role, t.Created.Local().Format(time.DateTime))
					}
					return tw.Flush()
				}
			},
		}, {
			name:    "revoke",
			summary: "Delete a token of ferry server's API; it stops working at once.",
			usage:   "ferry [--config DIR] token revoke NAME",
			setup: noFlags(func(e *env, args []string) error {
				if len(args) != 1 {
					return usagef("name the token")
				}
				if err := server.RevokeToken(server.TokensDir(e.configDir), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "token %s revoked\n", args[0])
				return nil
			}),
		}},
	})
}
