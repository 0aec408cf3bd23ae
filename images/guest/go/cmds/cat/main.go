// cat copies files, or standard input, to standard output.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	status := 0
	if len(os.Args) == 1 {
		os.Args = append(os.Args, "-")
	}
	for _, name := range os.Args[1:] {
		var in io.Reader = os.Stdin
		if name != "-" {
			file, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "cat:", err)
				status = 1
				continue
			}
			defer file.Close()
			in = file
		}
		if _, err := io.Copy(os.Stdout, in); err != nil {
			fmt.Fprintln(os.Stderr, "cat:", err)
			status = 1
		}
	}
	os.Exit(status)
}
