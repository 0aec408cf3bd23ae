// Package cli holds what every small command does the same way: report an error as
// "<command>: <error>" on standard error and remember that the exit status must say so.
package cli

import (
	"fmt"
	"os"
	"path/filepath"
)

// Status collects the failures of one command run.
type Status struct {
	Command string
	failed  bool
}

// Report prints err, if any, and marks the run as failed; it returns whether err was nil.
func (s *Status) Report(err error) bool {
	if err == nil {
		return true
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", s.Command, err)
	s.failed = true
	return false
}

// Exit ends the command: status 1 if anything failed, 0 otherwise.
func (s *Status) Exit() {
	if s.failed {
		os.Exit(1)
	}
	os.Exit(0)
}

// Fatal reports err and exits with status 1 at once.
func Fatal(command string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", command, err)
	os.Exit(1)
}

// Usage prints how to call the command and exits with status 2.
func Usage(command, usage string) {
	fmt.Fprintf(os.Stderr, "usage: %s %s\n", command, usage)
	os.Exit(2)
}

// Destinations pairs each source of "command source... target" with where it goes: into target under
// its own name when target is a directory, else target itself (then only one source is allowed).
func Destinations(command string, args []string) [][2]string {
	if len(args) < 2 {
		Usage(command, "source... target")
	}
	sources, target := args[:len(args)-1], args[len(args)-1]
	info, err := os.Stat(target)
	intoDir := err == nil && info.IsDir()
	if len(sources) > 1 && !intoDir {
		Fatal(command, fmt.Errorf("target %s is not a directory", target))
	}
	pairs := make([][2]string, 0, len(sources))
	for _, source := range sources {
		destination := target
		if intoDir {
			destination = filepath.Join(target, filepath.Base(source))
		}
		pairs = append(pairs, [2]string{source, destination})
	}
	return pairs
}
