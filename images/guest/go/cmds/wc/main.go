// wc counts lines, words and bytes of each file (or standard input).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

func count(in io.Reader) (lines, words, bytes int, err error) {
	reader := bufio.NewReader(in)
	for {
		line, readErr := reader.ReadString('\n')
		bytes += len(line)
		words += len(strings.Fields(line))
		if strings.HasSuffix(line, "\n") {
			lines++
		}
		if readErr == io.EOF {
			return lines, words, bytes, nil
		}
		if readErr != nil {
			return lines, words, bytes, readErr
		}
	}
}

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
				fmt.Fprintln(os.Stderr, "wc:", err)
				status = 1
				continue
			}
			defer file.Close()
			in = file
		}
		lines, words, bytes, err := count(in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wc:", err)
			status = 1
			continue
		}
		fmt.Printf("%d %d %d %s\n", lines, words, bytes, name)
	}
	os.Exit(status)
}
