// mkdir makes directories; -p makes missing parents too and accepts existing directories.
package main

import (
	"flag"
	"os"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	parents := flag.Bool("p", false, "make parent directories as needed")
	flag.Parse()
	status := cli.Status{Command: "mkdir"}
	for _, path := range flag.Args() {
		if *parents {
			status.Report(os.MkdirAll(path, 0o755))
		} else {
			status.Report(os.Mkdir(path, 0o755))
		}
	}
	status.Exit()
}
