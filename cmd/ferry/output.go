package main

import (
	"bufio"
	"fmt"
	"io"
	"sync"
)

// output is ferry's standard output. It is buffered, so that a table or a
// JSON document reaches a pipe in one write rather than one per cell, and
// it outlives a reader that stops reading (`ferry points | head -1`,
// `grep -q`): once a write finds the pipe closed, the rest of the output
// is dropped and the command carries on to its own exit status, instead
// of ferry dying of SIGPIPE without a word. Any other write error (a full
// disk under a redirection) is kept and reported by main.
//
// It is safe for concurrent use. Verbs that show progress or start a
// long wait call flush (below) so that what they printed appears first.
type output struct {
	mu     sync.Mutex
	w      io.Writer // os.Stdout
	buf    *bufio.Writer
	broken bool  // the reader went away
	err    error // the first other write error
}

func newOutput(w io.Writer) *output {
	return &output{w: w, buf: bufio.NewWriterSize(w, 64<<10)}
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.broken || o.err != nil {
		return len(p), o.err
	}
	if _, err := o.buf.Write(p); err != nil {
		o.fail(err)
		return len(p), o.err
	}
	return len(p), nil
}

// Flush writes out what the buffer holds. It returns the first write
// error other than a closed pipe.
func (o *output) Flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.broken || o.err != nil {
		return o.err
	}
	if err := o.buf.Flush(); err != nil {
		o.fail(err)
	}
	return o.err
}

func (o *output) fail(err error) {
	if brokenPipe(err) {
		o.broken = true
		return
	}
	o.err = fmt.Errorf("write standard output: %w", err)
}

// direct flushes the buffer and returns the writer beneath, for a child
// process to write to directly when it is a file.
func (o *output) direct() io.Writer {
	o.Flush()
	return o.w
}

// flush writes out what w holds if it buffers (ferry's standard output
// does; the buffers of tests do not).
func flush(w io.Writer) {
	if f, ok := w.(interface{ Flush() error }); ok {
		f.Flush()
	}
}
