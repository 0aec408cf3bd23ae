// df shows size, use and free space of mounted file systems (statfs(2)): all of them with blocks, or
// the ones holding the PATHs given. -k shows KiB (the default), -m MiB, -h human-readable sizes, -T
// adds the file system type.
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"bootmatrix.local/guest/internal/cli"
	"bootmatrix.local/guest/internal/units"
)

const usage = "[-k|-m|-h] [-T] [PATH]..."

type mount struct{ source, target, fstype string }

func main() {
	format, withType := units.KiB, false
	var paths []string
	for _, arg := range os.Args[1:] {
		switch {
		case arg == "-k":
			format = units.KiB
		case arg == "-m":
			format = units.MiB
		case arg == "-h":
			format = units.Human
		case arg == "-T":
			withType = true
		case strings.HasPrefix(arg, "-") && arg != "-":
			cli.Usage("df", usage)
		default:
			paths = append(paths, arg)
		}
	}
	mounts := readMounts()
	status := cli.Status{Command: "df"}
	var chosen []mount
	if len(paths) == 0 {
		chosen = mounts
	}
	for _, path := range paths {
		found, err := holding(mounts, path)
		if status.Report(err) {
			chosen = append(chosen, found)
		}
	}
	header := fmt.Sprintf("%-12s", "Filesystem")
	if withType {
		header += fmt.Sprintf(" %-8s", "Type")
	}
	fmt.Printf("%s %10s %10s %10s %4s %s\n", header, format.Header, "Used", "Available", "Use%", "Mounted on")
	for _, m := range chosen {
		var stat syscall.Statfs_t
		if syscall.Statfs(m.target, &stat) != nil || (stat.Blocks == 0 && len(paths) == 0) {
			continue // pseudo file systems (proc, sysfs) have no blocks
		}
		size := uint64(stat.Bsize)
		total, free, available := stat.Blocks*size, stat.Bfree*size, stat.Bavail*size
		used := total - free
		percent := "-"
		if used+available > 0 {
			percent = fmt.Sprintf("%d%%", (used*100+used+available-1)/(used+available))
		}
		line := fmt.Sprintf("%-12s", m.source)
		if withType {
			line += fmt.Sprintf(" %-8s", m.fstype)
		}
		fmt.Printf("%s %10s %10s %10s %4s %s\n", line, format.Of(total), format.Of(used), format.Of(available),
			percent, m.target)
	}
	status.Exit()
}

func readMounts() []mount {
	file, err := os.Open("/proc/mounts")
	if err != nil {
		cli.Fatal("df", err)
	}
	defer file.Close()
	var mounts []mount
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		if fields := strings.Fields(scanner.Text()); len(fields) >= 3 {
			mounts = append(mounts, mount{fields[0], fields[1], fields[2]})
		}
	}
	return mounts
}

// holding is the mount whose target is the longest prefix of path (the last such mount wins, as the
// kernel stacks them).
func holding(mounts []mount, path string) (mount, error) {
	absolute, err := filepath.Abs(path)
	if err == nil {
		absolute, err = filepath.EvalSymlinks(absolute)
	}
	if err != nil {
		return mount{}, err
	}
	best := -1
	for index, m := range mounts {
		inside := absolute == m.target || m.target == "/" || strings.HasPrefix(absolute, m.target+"/")
		if inside && (best < 0 || len(m.target) >= len(mounts[best].target)) {
			best = index
		}
	}
	if best < 0 {
		return mount{}, fmt.Errorf("%s: no file system holds it", path)
	}
	return mounts[best], nil
}
