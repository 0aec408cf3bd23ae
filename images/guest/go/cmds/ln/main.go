// ln makes a hard link, or with -s a symbolic link: ln [-s] target name.
package main

import (
	"flag"
	"os"

	"bootmatrix.local/guest/internal/cli"
)

func main() {
	symbolic := flag.Bool("s", false, "make a symbolic link")
	flag.Parse()
	if flag.NArg() != 2 {
		cli.Usage("ln", "[-s] target name")
	}
	target, name := flag.Arg(0), flag.Arg(1)
	link := os.Link
	if *symbolic {
		link = os.Symlink
	}
	if err := link(target, name); err != nil {
		cli.Fatal("ln", err)
	}
}
