// poweroff flushes the file systems and powers the machine off (reboot(2) POWER_OFF):
//
//	poweroff [-f] [-n] [-d SECONDS]
//
// This image's init runs no services to stop, so there is no orderly shutdown to ask it for: -f
// (force) is accepted and is what always happens. -n skips the sync, -d waits first.
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"bootmatrix.local/guest/internal/cli"
)

const usage = "[-f] [-n] [-d SECONDS]"

func main() {
	sync, delay := true, 0.0
	args := os.Args[1:]
	for len(args) > 0 {
		switch {
		case args[0] == "-f":
			args = args[1:]
		case args[0] == "-n":
			sync = false
			args = args[1:]
		case args[0] == "-d" && len(args) > 1:
			seconds, err := strconv.ParseFloat(args[1], 64)
			if err != nil || seconds < 0 {
				cli.Usage("poweroff", usage)
			}
			delay = seconds
			args = args[2:]
		default:
			cli.Usage("poweroff", usage)
		}
	}
	time.Sleep(time.Duration(delay * float64(time.Second)))
	if sync {
		syscall.Sync()
	}
	fmt.Println("poweroff: powering off")
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		cli.Fatal("poweroff", err)
	}
}
