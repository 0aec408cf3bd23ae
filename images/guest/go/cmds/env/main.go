// env prints the environment, or runs a command in a changed one:
//
//	env [-i] [-u NAME]... [NAME=VALUE]... [COMMAND [ARG]...]
//
// -i starts from an empty environment, -u removes NAME; the command is looked up in the changed PATH (as
// env(1) does), or, when the changed environment has none, in env's own PATH (execvp would use a
// default of /bin:/usr/bin, which this root does not have), and replaces env (exec), so its exit
// status is the command's.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

const usage = "[-i] [-u NAME]... [NAME=VALUE]... [COMMAND [ARG]...]"

func main() {
	args := os.Args[1:]
	environment := os.Environ()
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch arg := args[0]; {
		case arg == "--":
			args = args[1:]
			goto assignments
		case arg == "-i" || arg == "-":
			environment = nil
			args = args[1:]
		case arg == "-u" && len(args) > 1:
			environment = without(environment, args[1])
			args = args[2:]
		case strings.HasPrefix(arg, "-u") && len(arg) > 2:
			environment = without(environment, arg[2:])
			args = args[1:]
		default:
			cli.Usage("env", usage)
		}
	}
assignments:
	for len(args) > 0 && strings.Contains(args[0], "=") && !strings.HasPrefix(args[0], "=") {
		name := args[0][:strings.IndexByte(args[0], '=')]
		environment = append(without(environment, name), args[0])
		args = args[1:]
	}
	if len(args) == 0 {
		for _, variable := range environment {
			fmt.Println(variable)
		}
		return
	}
	path := args[0]
	if !strings.Contains(path, "/") {
		// Look the command up in the PATH the command will have, if it has one.
		if search, ok := lookup(environment, "PATH"); ok {
			os.Setenv("PATH", search)
		}
		found, err := exec.LookPath(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "env: %s: not found\n", args[0])
			os.Exit(127)
		}
		path = found
	}
	err := syscall.Exec(path, args, environment)
	status := 126
	if errors.Is(err, syscall.ENOENT) {
		status = 127
	}
	fmt.Fprintf(os.Stderr, "env: %s: %v\n", args[0], err)
	os.Exit(status)
}

func without(environment []string, name string) []string {
	kept := environment[:0:0]
	for _, variable := range environment {
		if !strings.HasPrefix(variable, name+"=") {
			kept = append(kept, variable)
		}
	}
	return kept
}

func lookup(environment []string, name string) (string, bool) {
	for _, variable := range environment {
		if value, ok := strings.CutPrefix(variable, name+"="); ok {
			return value, true
		}
	}
	return "", false
}
