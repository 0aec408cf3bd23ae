// hostname prints the host name, or sets it when given one.
package main

import (
	"fmt"
	"os"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	if len(os.Args) == 2 {
		if err := syscall.Sethostname([]byte(os.Args[1])); err != nil {
			cli.Fatal("hostname", err)
		}
		return
	}
	name, err := os.Hostname()
	if err != nil {
		cli.Fatal("hostname", err)
	}
	fmt.Println(name)
}
