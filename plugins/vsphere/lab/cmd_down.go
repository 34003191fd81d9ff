package lab

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var cmdDown = &command{
	usage: "ferry lab down [--dir DIR]",
	help: `Stops the lab in DIR (~/.ferry/lab by default) and removes what 'up' made
there: the simulated sites, the configuration (with ferry's catalog), the
repository, the state and the log. Other files in DIR are left alone.`,
	run: runDown,
}

// downTimeout bounds the wait for the server to exit.
const downTimeout = 30 * time.Second

func runDown(ctx context.Context, c *call) error {
	st, err := loadState(c.dir)
	if errors.Is(err, errNoLab) {
		return fmt.Errorf("%w: nothing to stop", err)
	}
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = ask(actx, st.Socket, request{Op: opStop})
	cancel()
	switch {
	case err == nil:
		if !waitGone(st.PID, downTimeout) {
			return classf(errdefs.ErrUnavailable, "the lab's server in %s (pid %d) did not stop within %s; see %s", c.dir, st.PID, downTimeout, filepath.Join(c.dir, logFile))
		}
		fmt.Fprintf(c.stdout, "The lab in %s is stopped (server pid %d); its sites, configuration and repository are removed.\n", c.dir, st.PID)
	case alive(st.PID) && isServer(st.PID, c.dir):
		stopProcess(st.PID)
		if alive(st.PID) {
			return classf(errdefs.ErrUnavailable, "the lab's server in %s (pid %d) does not answer and does not stop", c.dir, st.PID)
		}
		fmt.Fprintf(c.stdout, "The lab's server in %s did not answer (pid %d): stopped it; its files are removed.\n", c.dir, st.PID)
	default:
		fmt.Fprintf(c.stdout, "The lab in %s was not running (its server, pid %d, is gone); its files are removed.\n", c.dir, st.PID)
	}
	if err := removeLab(c.dir, st, false); err != nil {
		return fmt.Errorf("remove the lab's files in %s: %w", c.dir, err)
	}
	return nil
}
