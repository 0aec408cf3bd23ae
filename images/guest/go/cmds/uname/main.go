// uname prints system names (uname(2)): -s kernel name (the default), -n node name, -r release,
// -v version, -m machine, -a all of them; options may be combined (-sr).
package main

import (
	"fmt"
	"os"
	"strings"

	"bootmatrix.local/guest/internal/cli"
	"bootmatrix.local/guest/internal/utsname"
)

const usage = "[-asnrvm]"

func main() {
	wanted := map[byte]bool{}
	for _, arg := range os.Args[1:] {
		if arg == "--all" {
			arg = "-a"
		}
		if len(arg) < 2 || arg[0] != '-' {
			cli.Usage("uname", usage)
		}
		for i := 1; i < len(arg); i++ {
			if !strings.ContainsRune("asnrvm", rune(arg[i])) {
				cli.Usage("uname", usage)
			}
			wanted[arg[i]] = true
		}
	}
	if wanted['a'] {
		for _, letter := range []byte("snrvm") {
			wanted[letter] = true
		}
	}
	if len(wanted) == 0 {
		wanted['s'] = true
	}
	names, err := utsname.Get()
	if err != nil {
		cli.Fatal("uname", err)
	}
	var out []string
	for _, field := range []struct {
		letter byte
		value  string
	}{{'s', names.Sysname}, {'n', names.Nodename}, {'r', names.Release}, {'v', names.Version}, {'m', names.Machine}} {
		if wanted[field.letter] {
			out = append(out, field.value)
		}
	}
	fmt.Println(strings.Join(out, " "))
}
