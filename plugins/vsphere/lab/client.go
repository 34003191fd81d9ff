package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// askLab sends a request to the lab in c.dir, with errors that say which
// lab and what to do.
func askLab(ctx context.Context, c *call, req request) (*State, *response, error) {
	st, err := loadState(c.dir)
	if errors.Is(err, errNoLab) {
		return nil, nil, fmt.Errorf("%w: start one with '%s'", err, labCommand(c.dir, "up"))
	}
	if err != nil {
		return nil, nil, err
	}
	resp, err := ask(ctx, st.Socket, req)
	if errors.Is(err, errNotAnswering) {
		return st, nil, classf(errdefs.ErrUnavailable, "the lab in %s is not running (its server, pid %d, does not answer: %v); '%s' removes its files, then '%s' starts a new one",
			c.dir, st.PID, err, labCommand(c.dir, "down"), labCommand(c.dir, "up"))
	}
	if err != nil {
		return st, nil, fmt.Errorf("lab in %s: %w", c.dir, err)
	}
	return st, resp, nil
}
