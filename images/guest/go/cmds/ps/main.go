// ps lists processes from /proc: PID, state, and the command line (or [name] for kernel threads).
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

func describe(pid int) (state, command string, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", false // the process ended while we looked
	}
	// stat is "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ')'.
	text := string(stat)
	open, closing := strings.IndexByte(text, '('), strings.LastIndexByte(text, ')')
	if open < 0 || closing < open || closing+3 > len(text) {
		return "", "", false
	}
	name, state := text[open+1:closing], text[closing+2:closing+3]
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	command = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if command == "" {
		command = "[" + name + "]"
	}
	return state, command, true
}

func main() {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ps:", err)
		os.Exit(1)
	}
	var pids []int
	for _, entry := range entries {
		if pid, err := strconv.Atoi(entry.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	fmt.Printf("%5s %s %s\n", "PID", "S", "COMMAND")
	for _, pid := range pids {
		if state, command, ok := describe(pid); ok {
			fmt.Printf("%5d %s %s\n", pid, state, command)
		}
	}
}
