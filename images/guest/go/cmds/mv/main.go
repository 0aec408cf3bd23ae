// mv renames files; the last argument is the target, and a directory receives the sources under their
// own names. Across file systems (EXDEV) it copies, then removes the source.
package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
	"bootmatrix.local/guest/internal/files"
)

func copyAcross(source, target string) error {
	info, err := os.Stat(source)
	if err != nil {
		return err
	}
	if info.IsDir() {
		return fmt.Errorf("%s: moving a directory across file systems is not supported", source)
	}
	if _, err := files.Copy(source, target, info.Mode().Perm()); err != nil {
		return err
	}
	return os.Remove(source)
}

func move(source, target string) error {
	err := os.Rename(source, target)
	if errors.Is(err, syscall.EXDEV) {
		return copyAcross(source, target)
	}
	return err
}

func main() {
	args := os.Args[1:]
	if len(args) < 2 {
		cli.Usage("mv", "source... target")
	}
	status := cli.Status{Command: "mv"}
	for _, pair := range cli.Destinations("mv", args) {
		status.Report(move(pair[0], pair[1]))
	}
	status.Exit()
}
