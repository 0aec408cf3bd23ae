// chmod sets the permission bits of files to an octal mode: chmod 755 file...
package main

import (
	"os"
	"strconv"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	if len(os.Args) < 3 {
		cli.Usage("chmod", "octal-mode file...")
	}
	mode, err := strconv.ParseUint(os.Args[1], 8, 32)
	if err != nil {
		cli.Fatal("chmod", err)
	}
	status := cli.Status{Command: "chmod"}
	for _, path := range os.Args[2:] {
		status.Report(os.Chmod(path, os.FileMode(mode)))
	}
	status.Exit()
}
