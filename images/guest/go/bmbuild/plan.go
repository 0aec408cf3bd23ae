package main

// A build plan is what `go build` would run for one command, worked out when the image was built
// (images/recipes/gosource.py, build_plans): the compiler's and the linker's argv and their import
// configurations, which name the compiled packages of the shipped cache by path. Running those two tools
// directly skips the go command's own work on every first call (loading packages, resolving the module,
// hashing sources to find cache entries), which under TCG cost more than the compile and the link
// (measured on aarch64: go build 2.2-2.6 s, compile 0.16-0.36 s + link 0.65-0.77 s).
//
// A plan is used only while it is exact: the toolchain is the one it was made with (version, and the size
// of compile and link), every file of the command's own packages (its folder and the module's packages it
// imports, plus go.mod) has the content the plan recorded, no file was added to or removed from those
// folders, and every compiled package the import configurations name is there. Otherwise, or when a tool
// of the plan fails, the plain `go build` runs, and says why under BMBUILD_VERBOSE=1.
//
// Plan file (/linux_<goarch>/plans/<command>/plan), one record per line, fields separated by tabs:
//
//	bmbuild-plan	1
//	source	<the source folder the stub names>
//	toolchain	<go version>	<size of compile>	<size of link>
//	work	<the folder the tools write in; the import configurations name it>
//	dir	<a folder whose files must be exactly the inputs listed in it>
//	input	<file>	<sha256>
//	cwd	<the folder the tools run in>
//	env	<tool>	NAME=VALUE
//	run	<tool>	<argument>...            ($OUT: the binary to write)

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const planFormat = "1"

type step struct {
	tool string
	args []string
}

type plan struct {
	path      string
	source    string
	goversion string
	toolSizes map[string]int64
	work      string
	dirs      []string
	inputs    map[string]string // file -> sha256
	cwd       string
	env       map[string][]string // tool -> NAME=VALUE
	steps     []step
}

func toolPath(tool string) string {
	return "/go/pkg/tool/linux_" + runtime.GOARCH + "/" + tool
}

// planFile is where the plan of a command of the image would be.
func planFile(source string) string {
	return "/linux_" + runtime.GOARCH + "/plans/" + filepath.Base(source) + "/plan"
}

func readPlan(path string) (*plan, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	p := &plan{path: path, toolSizes: map[string]int64{}, inputs: map[string]string{}, env: map[string][]string{}}
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	first := true
	for scanner.Scan() {
		fields := strings.Split(scanner.Text(), "\t")
		if first {
			if len(fields) != 2 || fields[0] != "bmbuild-plan" || fields[1] != planFormat {
				return nil, fmt.Errorf("%s: not a plan of format %s", path, planFormat)
			}
			first = false
			continue
		}
		switch {
		case fields[0] == "source" && len(fields) == 2:
			p.source = fields[1]
		case fields[0] == "toolchain" && len(fields) == 4:
			p.goversion = fields[1]
			for i, tool := range []string{"compile", "link"} {
				size, err := strconv.ParseInt(fields[2+i], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%s: toolchain: %v", path, err)
				}
				p.toolSizes[tool] = size
			}
		case fields[0] == "work" && len(fields) == 2:
			p.work = fields[1]
		case fields[0] == "dir" && len(fields) == 2:
			p.dirs = append(p.dirs, fields[1])
		case fields[0] == "input" && len(fields) == 3:
			p.inputs[fields[1]] = fields[2]
		case fields[0] == "cwd" && len(fields) == 2:
			p.cwd = fields[1]
		case fields[0] == "env" && len(fields) == 3:
			p.env[fields[1]] = append(p.env[fields[1]], fields[2])
		case fields[0] == "run" && len(fields) >= 2:
			p.steps = append(p.steps, step{fields[1], fields[2:]})
		default:
			return nil, fmt.Errorf("%s: cannot read the line %q", path, scanner.Text())
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	if first || p.source == "" || p.work == "" || p.cwd == "" || len(p.steps) == 0 {
		return nil, fmt.Errorf("%s: incomplete plan", path)
	}
	return p, nil
}

func fileSHA256(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer file.Close()
	digest := sha256.New()
	if _, err := io.Copy(digest, file); err != nil {
		return "", err
	}
	return hex.EncodeToString(digest.Sum(nil)), nil
}

// goVersion is the toolchain's version: the first line of $GOROOT/VERSION.
func goVersion() string {
	data, err := os.ReadFile("/go/VERSION")
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line)
}

// importedFiles are the compiled packages an import configuration names.
func importedFiles(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "packagefile "); ok {
			if _, file, ok := strings.Cut(rest, "="); ok {
				files = append(files, file)
			}
		}
	}
	return files, nil
}

// stale says why the plan no longer describes the build of source into a binary of this image, or "".
func (p *plan) stale(source, work string) string {
	if p.source != source {
		return fmt.Sprintf("the plan is for %s", p.source)
	}
	if p.work != work {
		return fmt.Sprintf("the plan writes in %s, not %s", p.work, work)
	}
	if version := goVersion(); version != p.goversion {
		return fmt.Sprintf("toolchain %q, the plan's is %q", version, p.goversion)
	}
	for tool, size := range p.toolSizes {
		if info, err := os.Stat(toolPath(tool)); err != nil || info.Size() != size {
			return fmt.Sprintf("%s is not the plan's", toolPath(tool))
		}
	}
	for _, dir := range p.dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err.Error()
		}
		for _, entry := range entries {
			if _, listed := p.inputs[filepath.Join(dir, entry.Name())]; !listed && entry.Type().IsRegular() {
				return fmt.Sprintf("%s is new", filepath.Join(dir, entry.Name()))
			}
		}
	}
	for _, input := range slices.Sorted(maps.Keys(p.inputs)) {
		if digest, err := fileSHA256(input); err != nil || digest != p.inputs[input] {
			return fmt.Sprintf("%s changed", input)
		}
	}
	for _, config := range p.importConfigs() {
		files, err := importedFiles(config)
		if err != nil {
			return err.Error()
		}
		for _, file := range files {
			if strings.HasPrefix(file, work+"/") {
				continue // what the plan's own compile writes
			}
			if _, err := os.Stat(file); err != nil {
				return fmt.Sprintf("compiled package %s is missing", file)
			}
		}
	}
	return ""
}

// importConfigs are the -importcfg files the plan's steps read.
func (p *plan) importConfigs() []string {
	var configs []string
	for _, s := range p.steps {
		for i, arg := range s.args {
			if arg == "-importcfg" && i+1 < len(s.args) {
				configs = append(configs, s.args[i+1])
			}
		}
	}
	return configs
}

// deps is what the binary is built from, for later calls' freshness checks (see fresh.go).
func (p *plan) deps() deps {
	d := deps{dirs: append([]string(nil), p.dirs...)}
	for input := range p.inputs {
		if !slices.Contains(p.dirs, filepath.Dir(input)) {
			d.files = append(d.files, input)
		}
	}
	sort.Strings(d.files)
	return d
}

// run compiles and links as the plan says, writing the binary to out; it reports each tool's seconds.
func (p *plan) run(out string) ([]string, error) {
	if err := os.RemoveAll(p.work); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.work, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(p.work)
	var report []string
	for _, s := range p.steps {
		started := time.Now()
		args := make([]string, len(s.args))
		for i, arg := range s.args {
			args[i] = strings.ReplaceAll(arg, "$OUT", out)
		}
		cmd := exec.Command(toolPath(s.tool), args...)
		cmd.Dir = p.cwd
		cmd.Env = append(toolEnv(), p.env[s.tool]...)
		cmd.Stdout = os.Stderr
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s: %v", s.tool, err)
		}
		report = append(report, fmt.Sprintf("%s %.3f s", s.tool, time.Since(started).Seconds()))
	}
	return report, nil
}

// toolEnv is what the go command gives its tools, and the collector's pace: compile and link allocate
// a few tens of MB and exit, so collecting less often is time saved (BMBUILD_GOGC, default 400; measured
// on aarch64 under TCG: link 0.68-0.76 s with GOGC=100, 0.59-0.65 s with 400).
func toolEnv() []string {
	gogc := os.Getenv("BMBUILD_GOGC")
	if gogc == "" {
		gogc = "400"
	}
	return append(os.Environ(), "GOROOT=/go", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOGC="+gogc)
}
