// Package inputs runs a command over its file arguments, or standard input when there are none,
// the way cat, wc and sha256sum do: an unreadable file is reported and skipped, and the exit status
// says whether any failed.
package inputs

import (
	"fmt"
	"io"
	"os"
)

// Each calls handle for every input named in args ("-" or none: standard input) and returns the exit
// status: 0 if every input was handled, 1 otherwise. Errors are printed as "<command>: <error>".
func Each(command string, args []string, handle func(in io.Reader, name string) error) int {
	if len(args) == 0 {
		args = []string{"-"}
	}
	status := 0
	for _, name := range args {
		if err := one(name, handle); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", command, err)
			status = 1
		}
	}
	return status
}

func one(name string, handle func(io.Reader, string) error) error {
	if name == "-" {
		return handle(os.Stdin, name)
	}
	file, err := os.Open(name)
	if err != nil {
		return err
	}
	defer file.Close()
	return handle(file, name)
}
