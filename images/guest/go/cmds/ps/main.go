// ps lists processes from /proc: PID, parent PID, state, and the command line (or [name] for kernel
// threads). Every process is listed (so -e, -A, -f, -ef, aux and ax are accepted and mean that); -p
// PID[,PID]... lists only those, and exits 1 when none of them exists.
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"bootmatrix.local/guest/internal/cli"
)

func describe(pid int) (parent, state, command string, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", "", false // the process ended while we looked
	}
	// stat is "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ')'.
	text := string(stat)
	open, closing := strings.IndexByte(text, '('), strings.LastIndexByte(text, ')')
	if open < 0 || closing < open || closing+3 > len(text) {
		return "", "", "", false
	}
	name, state := text[open+1:closing], text[closing+2:closing+3]
	if rest := strings.Fields(text[closing+2:]); len(rest) > 1 {
		parent = rest[1]
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	command = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if command == "" {
		command = "[" + name + "]"
	}
	return parent, state, command, true
}

const usage = "[-e|-A|-f|-ef|aux|ax] [-p PID[,PID]...]"

func main() {
	var only []int
	args := os.Args[1:]
	for len(args) > 0 {
		switch arg := args[0]; {
		case arg == "-e" || arg == "-A" || arg == "-f" || arg == "-ef" || arg == "aux" || arg == "ax":
			args = args[1:]
		case arg == "-p" && len(args) > 1:
			for _, field := range strings.Split(args[1], ",") {
				pid, err := strconv.Atoi(field)
				if err != nil {
					cli.Usage("ps", usage)
				}
				only = append(only, pid)
			}
			args = args[2:]
		default:
			cli.Usage("ps", usage)
		}
	}
	pids := only
	if only == nil {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			cli.Fatal("ps", err)
		}
		for _, entry := range entries {
			if pid, err := strconv.Atoi(entry.Name()); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	sort.Ints(pids)
	fmt.Printf("%5s %5s %s %s\n", "PID", "PPID", "S", "COMMAND")
	shown := 0
	for _, pid := range pids {
		if parent, state, command, ok := describe(pid); ok {
			fmt.Printf("%5d %5s %s %s\n", pid, parent, state, command)
			shown++
		}
	}
	if only != nil && shown == 0 {
		os.Exit(1)
	}
}
