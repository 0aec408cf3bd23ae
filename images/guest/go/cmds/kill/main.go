// kill sends a signal (default TERM; -9, -KILL, -HUP, ...) to processes.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

var names = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM,
	"STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

func parseSignal(text string) (syscall.Signal, error) {
	if number, err := strconv.Atoi(text); err == nil {
		return syscall.Signal(number), nil
	}
	if signal, ok := names[strings.TrimPrefix(strings.ToUpper(text), "SIG")]; ok {
		return signal, nil
	}
	return 0, fmt.Errorf("unknown signal %q", text)
}

func main() {
	args := os.Args[1:]
	signal := syscall.SIGTERM
	if len(args) > 0 && strings.HasPrefix(args[0], "-") {
		parsed, err := parseSignal(args[0][1:])
		if err != nil {
			cli.Fatal("kill", err)
		}
		signal, args = parsed, args[1:]
	}
	status := cli.Status{Command: "kill"}
	for _, arg := range args {
		pid, err := strconv.Atoi(arg)
		if status.Report(err) {
			status.Report(syscall.Kill(pid, signal))
		}
	}
	status.Exit()
}
