// head prints the first lines of each input (10, or -n N).
package main

import (
	"bufio"
	"flag"
	"io"
	"os"

	"bootmatrix.local/guest/internal/inputs"
)

func main() {
	lines := flag.Int("n", 10, "number of lines")
	flag.Parse()
	out := bufio.NewWriter(os.Stdout)
	status := inputs.Each("head", flag.Args(), func(in io.Reader, _ string) error {
		reader := bufio.NewReader(in)
		for i := 0; i < *lines; i++ {
			line, err := reader.ReadString('\n')
			out.WriteString(line)
			if err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	out.Flush()
	os.Exit(status)
}
