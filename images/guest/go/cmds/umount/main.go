// umount detaches the file systems mounted at the given targets.
package main

import (
	"os"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	status := cli.Status{Command: "umount"}
	for _, target := range os.Args[1:] {
		status.Report(syscall.Unmount(target, 0))
	}
	status.Exit()
}
