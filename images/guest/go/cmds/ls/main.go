// ls lists directory entries, one per line, sorted; -l adds mode and size, -i the inode number.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"syscall"
)

func main() {
	long := flag.Bool("l", false, "long listing: mode, size, name")
	inode := flag.Bool("i", false, "print each entry's inode number first")
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
			if !*long && !*inode {
				fmt.Println(entry.Name())
				continue
			}
			info, err := entry.Info()
			if err != nil {
				fmt.Fprintln(os.Stderr, "ls:", err)
				status = 1
				continue
			}
			if stat, ok := info.Sys().(*syscall.Stat_t); ok && *inode {
				fmt.Printf("%d ", stat.Ino)
			}
			if *long {
				fmt.Printf("%s %10d ", info.Mode(), info.Size())
			}
			fmt.Println(entry.Name())
		}
	}
	os.Exit(status)
}
