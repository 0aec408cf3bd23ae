package main

// Freshness of a built command: besides the binary, the builder keeps /run/bm/cache/deps/<name>, the folders and
// files the binary was built from: the command's folder, the folder of every package of its own module
// it imports (found by following import lines from the command's folder; build constraints are not
// read, so the list can only be longer than Go's), and go.mod. A later call rebuilds when any of them,
// or any file in those folders, is newer than the binary; a file added or removed changes its folder's
// time. Before these records, a change to an imported package of the module went unnoticed.

import (
	"bufio"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

type deps struct {
	dirs  []string
	files []string
}

// depsFile is where the record of binary is: beside the cache's binaries, not among them.
func depsFile(binary string) string { return filepath.Join(state, "cache/deps", filepath.Base(binary)) }

func (d deps) write(binary string) error {
	var text strings.Builder
	for _, dir := range d.dirs {
		text.WriteString("dir\t" + dir + "\n")
	}
	for _, file := range d.files {
		text.WriteString("file\t" + file + "\n")
	}
	if err := os.MkdirAll(filepath.Dir(depsFile(binary)), 0o755); err != nil {
		return err
	}
	temporary := depsFile(binary) + ".tmp"
	if err := os.WriteFile(temporary, []byte(text.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(temporary, depsFile(binary))
}

// readDeps is the record of binary, or only its source folder when there is none.
func readDeps(binary, source string) deps {
	file, err := os.Open(depsFile(binary))
	if err != nil {
		return deps{dirs: []string{source}}
	}
	defer file.Close()
	var d deps
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		kind, path, _ := strings.Cut(scanner.Text(), "\t")
		switch kind {
		case "dir":
			d.dirs = append(d.dirs, path)
		case "file":
			d.files = append(d.files, path)
		}
	}
	if len(d.dirs) == 0 {
		d.dirs = []string{source}
	}
	return d
}

// stale says whether binary is missing or older than anything it was built from.
func stale(source, binary string) bool {
	built, err := os.Stat(binary)
	if err != nil {
		return true
	}
	newer := func(path string) bool {
		info, err := os.Stat(path)
		return err != nil || info.ModTime().After(built.ModTime())
	}
	d := readDeps(binary, source)
	for _, dir := range d.dirs {
		if newer(dir) {
			return true
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return true // let the build report it
		}
		for _, entry := range entries {
			if info, err := entry.Info(); err == nil && info.ModTime().After(built.ModTime()) {
				return true
			}
		}
	}
	for _, file := range d.files {
		if newer(file) {
			return true
		}
	}
	return false
}

// moduleOf finds the go.mod at or above dir: its path and the module's path.
func moduleOf(dir string) (string, string) {
	for {
		goMod := filepath.Join(dir, "go.mod")
		if data, err := os.ReadFile(goMod); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
					return goMod, strings.Trim(strings.TrimSpace(rest), `"`)
				}
			}
			return goMod, ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ""
		}
		dir = parent
	}
}

// scanDeps follows the import lines of source's Go files to the module's own packages they use.
func scanDeps(source string) deps {
	goMod, module := moduleOf(source)
	d := deps{}
	if goMod != "" {
		d.files = []string{goMod}
	}
	root := filepath.Dir(goMod)
	seen := map[string]bool{source: true}
	queue := []string{source}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		d.dirs = append(d.dirs, dir)
		entries, _ := os.ReadDir(dir)
		for _, entry := range entries {
			name := entry.Name()
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.ImportsOnly)
			if err != nil || module == "" {
				continue
			}
			for _, spec := range parsed.Imports {
				path, err := strconv.Unquote(spec.Path.Value)
				if err != nil || !strings.HasPrefix(path, module+"/") {
					continue
				}
				imported := filepath.Join(root, strings.TrimPrefix(path, module+"/"))
				if !seen[imported] {
					seen[imported] = true
					queue = append(queue, imported)
				}
			}
		}
	}
	sort.Strings(d.dirs[1:])
	return d
}
