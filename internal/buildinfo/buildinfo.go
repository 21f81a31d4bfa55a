// Package buildinfo holds the version and commit stamped into the binaries
// at link time (see the Makefile's LDFLAGS).
package buildinfo

// Version and Commit are set with -ldflags -X; they are variables only so the
// linker can write them, and nothing assigns them at run time.
var (
	Version = "dev"
	Commit  = "unknown"
)
