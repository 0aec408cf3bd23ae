// cp copies files; -r copies directories with what they hold. The last argument is the target: a
// directory receives the sources under their own names.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"bootmatrix.local/guest/internal/cli"
)

func copyFile(source, target string, mode os.FileMode) error {
	in, err := os.Open(source)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func copyTree(source, target string, recursive bool) error {
	info, err := os.Lstat(source)
	if err != nil {
		return err
	}
	switch {
	case info.Mode()&os.ModeSymlink != 0:
		link, err := os.Readlink(source)
		if err != nil {
			return err
		}
		return os.Symlink(link, target)
	case info.IsDir():
		if !recursive {
			return fmt.Errorf("%s is a directory (use -r)", source)
		}
		if err := os.MkdirAll(target, info.Mode().Perm()); err != nil {
			return err
		}
		entries, err := os.ReadDir(source)
		if err != nil {
			return err
		}
		for _, entry := range entries {
			if err := copyTree(filepath.Join(source, entry.Name()), filepath.Join(target, entry.Name()), true); err != nil {
				return err
			}
		}
		return nil
	default:
		return copyFile(source, target, info.Mode())
	}
}

func main() {
	recursive := flag.Bool("r", false, "copy directories recursively")
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 {
		cli.Usage("cp", "[-r] source... target")
	}
	sources, target := args[:len(args)-1], args[len(args)-1]
	info, err := os.Stat(target)
	intoDir := err == nil && info.IsDir()
	if len(sources) > 1 && !intoDir {
		cli.Fatal("cp", fmt.Errorf("target %s is not a directory", target))
	}
	status := cli.Status{Command: "cp"}
	for _, source := range sources {
		destination := target
		if intoDir {
			destination = filepath.Join(target, filepath.Base(source))
		}
		status.Report(copyTree(source, destination, *recursive))
	}
	status.Exit()
}
