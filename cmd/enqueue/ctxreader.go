package main

import (
	"context"
	"fmt"
	"io"
)

// ctxReader reads r in a goroutine of its own, so a Read blocked on a slow
// pipe (or spinning through /dev/zero) returns as soon as ctx is done: the
// operator's Ctrl-C or SIGTERM stops the command at once, not when the
// input ends. After ctx is done the goroutine may stay blocked in r.Read
// until the input yields; the command is about to exit anyway.
type ctxReader struct {
	ctx    context.Context
	chunks chan chunk
	rest   []byte
	err    error
}

type chunk struct {
	b   []byte
	err error
}

// readChunk is the size of the reads the goroutine makes.
const readChunk = 64 << 10

func newCtxReader(ctx context.Context, r io.Reader) *ctxReader {
	c := &ctxReader{ctx: ctx, chunks: make(chan chunk)}
	go func() {
		for {
			buf := make([]byte, readChunk)
			n, err := r.Read(buf)
			select {
			case c.chunks <- chunk{buf[:n], err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

// Read returns what the goroutine read, or the context's error (wrapped)
// once it is done.
func (c *ctxReader) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		select {
		case <-c.ctx.Done():
			return 0, fmt.Errorf("stopped reading: %w", c.ctx.Err())
		case ch := <-c.chunks:
			c.rest, c.err = ch.b, ch.err
		}
	}
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("stopped reading: %w", err)
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}
