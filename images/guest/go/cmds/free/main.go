// free shows memory and swap from /proc/meminfo: total, used, free, shared, buff/cache, available.
// -k KiB (the default), -m MiB, -b bytes, -h human-readable.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"bootmatrix.local/guest/internal/cli"
	"bootmatrix.local/guest/internal/units"
)

const usage = "[-b|-k|-m|-h]"

func main() {
	format := units.KiB
	for _, arg := range os.Args[1:] {
		switch arg {
		case "-b":
			format = units.Bytes
		case "-k":
			format = units.KiB
		case "-m":
			format = units.MiB
		case "-h":
			format = units.Human
		default:
			cli.Usage("free", usage)
		}
	}
	file, err := os.Open("/proc/meminfo")
	if err != nil {
		cli.Fatal("free", err)
	}
	defer file.Close()
	kib := map[string]uint64{}
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 2 {
			number, _ := strconv.ParseUint(fields[1], 10, 64)
			kib[strings.TrimSuffix(fields[0], ":")] = number * 1024
		}
	}
	total, free, available := kib["MemTotal"], kib["MemFree"], kib["MemAvailable"]
	cache := kib["Buffers"] + kib["Cached"] + kib["SReclaimable"]
	used := total - free - min(cache, total-free)
	of := format.Of
	fmt.Printf("%-5s %11s %11s %11s %11s %11s %11s\n", "", "total", "used", "free", "shared", "buff/cache",
		"available")
	fmt.Printf("%-5s %11s %11s %11s %11s %11s %11s\n", "Mem:", of(total), of(used), of(free), of(kib["Shmem"]),
		of(cache), of(available))
	swapTotal, swapFree := kib["SwapTotal"], kib["SwapFree"]
	fmt.Printf("%-5s %11s %11s %11s\n", "Swap:", of(swapTotal), of(swapTotal-swapFree), of(swapFree))
}
