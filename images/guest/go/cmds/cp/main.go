// cp copies files; -r copies directories with what they hold. The last argument is the target: a
// directory receives the sources under their own names.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"bootmatrix.local/guest/internal/cli"
	"bootmatrix.local/guest/internal/files"
)

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
		_, err := files.Copy(source, target, info.Mode().Perm())
		return err
	}
}

func main() {
	recursive := flag.Bool("r", false, "copy directories recursively")
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 {
		cli.Usage("cp", "[-r] source... target")
	}
	status := cli.Status{Command: "cp"}
	for _, pair := range cli.Destinations("cp", args) {
		status.Report(copyTree(pair[0], pair[1], *recursive))
	}
	status.Exit()
}
