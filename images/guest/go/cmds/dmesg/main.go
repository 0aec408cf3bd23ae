// dmesg prints the kernel's log from /dev/kmsg, one "[seconds] message" line per record, the way
// util-linux does; -r prints the raw records (priority, sequence, time; message), -c is refused (the
// log is only read here), and a level filter -l LEVEL[,LEVEL] keeps records of those levels.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

const usage = "[-r] [-l emerg|alert|crit|err|warn|notice|info|debug[,...]]"

var levels = []string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"}

func main() {
	raw := false
	keep := map[int]bool{}
	args := os.Args[1:]
	for len(args) > 0 {
		switch {
		case args[0] == "-r":
			raw = true
			args = args[1:]
		case args[0] == "-l" && len(args) > 1:
			for _, name := range strings.Split(args[1], ",") {
				level := indexOf(levels, name)
				if level < 0 {
					cli.Usage("dmesg", usage)
				}
				keep[level] = true
			}
			args = args[2:]
		default:
			cli.Usage("dmesg", usage)
		}
	}
	// O_NONBLOCK: a read at the end of the log returns EAGAIN instead of waiting for new records.
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		cli.Fatal("dmesg", err)
	}
	defer syscall.Close(fd)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	record := make([]byte, 8192) // one read returns one record
	for {
		n, err := syscall.Read(fd, record)
		if errors.Is(err, syscall.EAGAIN) {
			return
		}
		if errors.Is(err, syscall.EPIPE) {
			continue // records were overwritten while we read: go on with the next one
		}
		if err != nil {
			out.Flush()
			cli.Fatal("dmesg", err)
		}
		line := string(record[:n])
		header, message, found := strings.Cut(line, ";")
		if !found {
			continue
		}
		fields := strings.Split(header, ",")
		if len(fields) < 3 {
			continue
		}
		priority, _ := strconv.Atoi(fields[0])
		if len(keep) > 0 && !keep[priority&7] {
			continue
		}
		if raw {
			fmt.Fprint(out, line)
			continue
		}
		message, _, _ = strings.Cut(message, "\n") // continuation lines carry key=value pairs
		microseconds, _ := strconv.ParseInt(fields[2], 10, 64)
		fmt.Fprintf(out, "[%5d.%06d] %s\n", microseconds/1e6, microseconds%1e6, message)
	}
}

func indexOf(list []string, value string) int {
	for index, item := range list {
		if item == value {
			return index
		}
	}
	return -1
}
