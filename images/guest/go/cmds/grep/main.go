// grep prints the lines that match a regular expression (Go's RE2 syntax); -v inverts, -i ignores case,
// -c counts. Exit status: 0 when a line was selected, 1 when none was, 2 on an error.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"

	"bootmatrix.local/guest/internal/inputs"
)

func main() {
	invert := flag.Bool("v", false, "select lines that do not match")
	fold := flag.Bool("i", false, "ignore case")
	count := flag.Bool("c", false, "print only the number of selected lines")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: grep [-v] [-i] [-c] pattern [file...]")
		os.Exit(2)
	}
	expression := flag.Arg(0)
	if *fold {
		expression = "(?i)" + expression
	}
	pattern, err := regexp.Compile(expression)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grep:", err)
		os.Exit(2)
	}
	files := flag.Args()[1:]
	selected := 0
	status := inputs.Each("grep", files, func(in io.Reader, name string) error {
		scanner := bufio.NewScanner(in)
		scanner.Buffer(make([]byte, 64*1024), 16*1024*1024)
		matches := 0
		for scanner.Scan() {
			if pattern.MatchString(scanner.Text()) == *invert {
				continue
			}
			matches++
			if *count {
				continue
			}
			if len(files) > 1 {
				fmt.Printf("%s:", name)
			}
			fmt.Println(scanner.Text())
		}
		if *count {
			if len(files) > 1 {
				fmt.Printf("%s:", name)
			}
			fmt.Println(matches)
		}
		selected += matches
		return scanner.Err()
	})
	switch {
	case status != 0:
		os.Exit(2)
	case selected == 0:
		os.Exit(1)
	}
}
