// mv renames files; the last argument is the target, and a directory receives the sources under their
// own names. Across file systems (EXDEV) it copies, then removes the source.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

func copyAcross(source, target string) error {
	info, err := os.Stat(source)
	if err != nil {
		return err
	}
	if info.IsDir() {
		return fmt.Errorf("%s: moving a directory across file systems is not supported", source)
	}
	in, err := os.Open(source)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
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
	sources, target := args[:len(args)-1], args[len(args)-1]
	info, err := os.Stat(target)
	intoDir := err == nil && info.IsDir()
	if len(sources) > 1 && !intoDir {
		cli.Fatal("mv", fmt.Errorf("target %s is not a directory", target))
	}
	status := cli.Status{Command: "mv"}
	for _, source := range sources {
		destination := target
		if intoDir {
			destination = filepath.Join(target, filepath.Base(source))
		}
		status.Report(move(source, destination))
	}
	status.Exit()
}
