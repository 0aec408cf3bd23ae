// poweroff flushes the file systems and powers the machine off (reboot(2) POWER_OFF).
package main

import (
	"fmt"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	syscall.Sync()
	fmt.Println("poweroff: powering off")
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		cli.Fatal("poweroff", err)
	}
}
