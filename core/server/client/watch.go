package client

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Watch follows the server's events (GET /v1/events) of one job's
// sessions (job != "") or of one session (session != ""). It calls
// connected once the server has taken the watch, then each with the kind
// of every event it sends (session.started, vm.finished,
// session.finished, ...), and returns when the stream ends (a watch of
// one session ends with it), when ctx ends (nil), or when each returns
// false (nil). Events are only a signal: what they tell is read from the
// API, which a missed event cannot make wrong.
func (c *Client) Watch(ctx context.Context, job, session string, connected func(), each func(kind string) bool) error {
	u := *c.base
	u.Path = "/v1/events"
	q := url.Values{}
	if job != "" {
		q.Set("job", job)
	}
	if session != "" {
		q.Set("session", session)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil
	case err != nil:
		return c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/events: ferry server at %s answered %s: %w", c.base, resp.Status, errdefs.ErrUnavailable)
	}
	connected()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20) // an event is a line of JSON, well under this
	for sc.Scan() {
		kind, ok := strings.CutPrefix(sc.Text(), "event: ")
		if ok && !each(kind) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("GET /v1/events: the stream of ferry server at %s broke: %w: %w", c.base, err, errdefs.ErrUnavailable)
	}
	return nil
}
