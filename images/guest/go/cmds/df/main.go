// df shows size, use and free space of each mounted file system, in KiB (statfs(2)).
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	mounts, err := os.Open("/proc/mounts")
	if err != nil {
		cli.Fatal("df", err)
	}
	defer mounts.Close()
	fmt.Printf("%-12s %10s %10s %10s %s\n", "Filesystem", "1K-blocks", "Used", "Available", "Mounted on")
	scanner := bufio.NewScanner(mounts)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 2 {
			continue
		}
		var stat syscall.Statfs_t
		if syscall.Statfs(fields[1], &stat) != nil || stat.Blocks == 0 {
			continue // pseudo file systems (proc, sysfs) have no blocks
		}
		unit := uint64(stat.Bsize) / 1024
		total, free, available := stat.Blocks*unit, stat.Bfree*unit, stat.Bavail*unit
		fmt.Printf("%-12s %10d %10d %10d %s\n", fields[0], total, total-free, available, fields[1])
	}
}
