package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
)

// `ferry proxy` as a Windows service (service_windows.go): the service
// control manager starts ferry.exe with the arguments install-service
// stored, and the proxy then runs through svc.Run instead of waiting for
// Ctrl-C. Elsewhere (service_other.go) it always waits for signals and the
// service subcommands refuse.

// serveFunc serves until ctx ends, calling ready once it can take work.
// Its env is where it logs: the console's, or the service's log file.
type serveFunc func(e *env, ctx context.Context, ready func()) error

// pathFlags are the proxy flags that name files or folders: the service
// gets them absolute, since it starts in the system folder.
var pathFlags = map[string]bool{"tls": true, "plugins": true}

// serviceArgs is the command line the service starts ferry with: the
// configuration folder (absolute) and the log level, then proxy and the
// flags of fs given on the command line, by name, each as --name=value so
// a value that starts with a dash stays a value.
func serviceArgs(configDir, logLevel string, fs *pflag.FlagSet) ([]string, error) {
	if !filepath.IsAbs(configDir) {
		return nil, fmt.Errorf("the configuration folder %q is not an absolute path", configDir)
	}
	args := []string{"--config=" + configDir, "--log-level=" + logLevel, "proxy"}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Changed {
			return
		}
		v := f.Value.String()
		if pathFlags[f.Name] && err == nil {
			if v, err = filepath.Abs(v); err != nil {
				err = fmt.Errorf("--%s: %w", f.Name, err)
			}
		}
		args = append(args, "--"+f.Name+"="+v)
	})
	if err != nil {
		return nil, err
	}
	return args, nil
}
