// rm removes files; -r removes directories and what they hold; -f ignores missing files.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	recursive := flag.Bool("r", false, "remove directories and their contents")
	force := flag.Bool("f", false, "ignore files that do not exist")
	flag.Parse()
	status := cli.Status{Command: "rm"}
	for _, path := range flag.Args() {
		info, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) && *force {
			continue
		}
		if !status.Report(err) {
			continue
		}
		if info.IsDir() && !*recursive {
			status.Report(fmt.Errorf("%s is a directory (use -r)", path))
			continue
		}
		if *recursive {
			status.Report(os.RemoveAll(path))
		} else {
			status.Report(os.Remove(path))
		}
	}
	status.Exit()
}
