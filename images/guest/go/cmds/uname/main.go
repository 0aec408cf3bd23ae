// uname prints the kernel name, release and machine (uname -srm).
package main

import (
	"fmt"

	"bootmatrix.local/guest/internal/cli"
	"bootmatrix.local/guest/internal/utsname"
)

func main() {
	names, err := utsname.Get()
	if err != nil {
		cli.Fatal("uname", err)
	}
	fmt.Println(names.Sysname, names.Release, names.Machine)
}
