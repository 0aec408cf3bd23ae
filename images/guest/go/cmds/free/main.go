// free shows total, used and available memory in KiB, from /proc/meminfo.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	file, err := os.Open("/proc/meminfo")
	if err != nil {
		cli.Fatal("free", err)
	}
	defer file.Close()
	values := map[string]uint64{}
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 2 {
			number, _ := strconv.ParseUint(fields[1], 10, 64)
			values[strings.TrimSuffix(fields[0], ":")] = number
		}
	}
	total, available := values["MemTotal"], values["MemAvailable"]
	fmt.Printf("%-5s %10s %10s %10s\n", "", "total", "used", "available")
	fmt.Printf("%-5s %10d %10d %10d\n", "Mem:", total, total-available, available)
}
