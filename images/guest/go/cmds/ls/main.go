// ls lists directory entries, one per line, sorted; -l adds mode and size.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
)

func main() {
	long := flag.Bool("l", false, "long listing: mode, size, name")
	flag.Parse()
	dirs := flag.Args()
	if len(dirs) == 0 {
		dirs = []string{"."}
	}
	status := 0
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ls:", err)
			status = 1
			continue
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, entry := range entries {
			if !*long {
				fmt.Println(entry.Name())
				continue
			}
			info, err := entry.Info()
			if err != nil {
				fmt.Fprintln(os.Stderr, "ls:", err)
				status = 1
				continue
			}
			fmt.Printf("%s %10d %s\n", info.Mode(), info.Size(), entry.Name())
		}
	}
	os.Exit(status)
}
