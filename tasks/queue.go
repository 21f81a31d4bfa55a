package tasks

import (
	"fmt"
	"unicode/utf8"
)

// MaxQueueLen is the longest queue name ValidateQueue accepts: asynq puts it
// in every key of the queue, and a name that long is a mistake.
const MaxQueueLen = 64

// ValidateQueue checks an asynq queue name: 1 to MaxQueueLen letters, digits,
// '-', '_' and '.'. It is the one rule the worker (WORKER_QUEUE) and the
// operator CLI (--queue) share, so the CLI never enqueues to, retries on or
// cancels on a queue no worker would serve. Braces, spaces and the like
// would also change asynq's Redis Cluster hash tags.
func ValidateQueue(name string) error {
	switch n := utf8.RuneCountInString(name); {
	case name == "":
		return fmt.Errorf("queue name is empty")
	case n > MaxQueueLen:
		return fmt.Errorf("queue name %q is %d characters long, at most %d allowed", truncate(name, 40), n, MaxQueueLen)
	}
	for i, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("queue name %q: character %q at byte %d is not a letter, digit, '-', '_' or '.'", name, r, i+1)
		}
	}
	return nil
}
