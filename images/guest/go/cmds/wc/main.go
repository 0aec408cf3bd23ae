// wc counts lines, words and bytes of each file (or standard input).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"bootmatrix.local/guest/internal/inputs"
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
	os.Exit(inputs.Each("wc", os.Args[1:], func(in io.Reader, name string) error {
		lines, words, bytes, err := count(in)
		if err != nil {
			return err
		}
		fmt.Printf("%d %d %d %s\n", lines, words, bytes, name)
		return nil
	}))
}
