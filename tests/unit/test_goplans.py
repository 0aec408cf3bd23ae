"""The build plans of the mostly-source image: reading `go build -n` and writing a plan from it."""

from __future__ import annotations

import pytest

from images.recipes.goplans import make_plan, parse_build_script
from images.tools import BuildError

# The shape of `go build -n -o /warm/out/ ./cmds/... cmd/gofmt` (Go 1.24), cut to one command.
SCRIPT = """
#
# bootmatrix.local/guest/cmds/uname
#

mkdir -p $WORK/b001/
cat >$WORK/b001/importcfg << 'EOF' # internal
# import config
packagefile bootmatrix.local/guest/internal/cli=/gocache/linux_arm64/13/1390-d
packagefile fmt=/gocache/linux_arm64/d7/d7a0-d
EOF
cd /src
/go/pkg/tool/linux_amd64/compile -o $WORK/b001/_pkg_.a -trimpath "/src/cmds/uname=>bootmatrix.local/guest/cmds/uname;\
$WORK/b001=>" -p main -lang=go1.24 -complete -buildid AAA/AAA -goversion go1.24.4 -c=2 -nolocalimports \
-importcfg $WORK/b001/importcfg -pack ./cmds/uname/main.go
/go/pkg/tool/linux_amd64/buildid -w $WORK/b001/_pkg_.a # internal
cat >$WORK/b001/importcfg.link << 'EOF' # internal
packagefile bootmatrix.local/guest/cmds/uname=$WORK/b001/_pkg_.a
packagefile fmt=/gocache/linux_arm64/d7/d7a0-d
modinfo "0w\\xaf\\f"
EOF
mkdir -p $WORK/b001/exe/
cd .
GOROOT='' /go/pkg/tool/linux_amd64/link -o $WORK/b001/exe/a.out -importcfg $WORK/b001/importcfg.link \
-buildmode=exe -buildid=BBB/AAA/AAA/BBB -s -w -extld=gcc $WORK/b001/_pkg_.a
/go/pkg/tool/linux_amd64/buildid -w $WORK/b001/exe/a.out # internal
mv $WORK/b001/exe/a.out /warm/out/uname
failed to start telemetry sidecar: os.Executable: readlink /proc/self/exe: no such file or directory
""".replace("\\\n", "")


def test_the_script_gives_each_binary_its_compile_and_link() -> None:
    actions = parse_build_script(SCRIPT, "/src")
    (action,) = actions.values()
    assert action.binary == "uname"
    assert [(s.tool, s.cwd, s.env) for s in action.steps] == [("compile", "/src", []), ("link", "/src", ["GOROOT="])]
    assert action.steps[0].args[:4] == ["-o", "$WORK/b001/_pkg_.a", "-trimpath",
                                        "/src/cmds/uname=>bootmatrix.local/guest/cmds/uname;$WORK/b001=>"]
    assert set(action.files) == {"importcfg", "importcfg.link"}
    assert action.files["importcfg.link"].endswith('modinfo "0w\\xaf\\f"\n')


def test_the_plan_names_guest_paths_only() -> None:
    (action,) = parse_build_script(SCRIPT, "/src").values()
    plan = make_plan("uname", action, source="/src/cmds/uname", goarch="arm64", toolchain=("go1.24.4", 10, 20),
                     inputs={"/src/go.mod": "aa", "/src/cmds/uname/main.go": "bb"}, dirs=["/src/cmds/uname"])
    lines = plan.text.splitlines()
    assert lines[:5] == ["bmbuild-plan\t1", "source\t/src/cmds/uname", "toolchain\tgo1.24.4\t10\t20",
                         "work\t/run/bm/cache/work/uname", "dir\t/src/cmds/uname"]
    assert "input\t/src/cmds/uname/main.go\tbb" in lines and "cwd\t/src" in lines and "env\tlink\tGOROOT=" in lines
    compile_line = next(line for line in lines if line.startswith("run\tcompile")).split("\t")
    assert compile_line[2:4] == ["-o", "/run/bm/cache/work/uname/_pkg_.a"]
    assert "-importcfg\t/linux_arm64/plans/uname/importcfg\t" in "\t".join(compile_line)
    assert "/src/cmds/uname=>bootmatrix.local/guest/cmds/uname;/run/bm/cache/work/uname=>" in compile_line
    link_line = next(line for line in lines if line.startswith("run\tlink")).split("\t")
    assert link_line[2:5] == ["-o", "$OUT", "-importcfg"] and link_line[-1] == "/run/bm/cache/work/uname/_pkg_.a"
    assert "packagefile bootmatrix.local/guest/cmds/uname=/run/bm/cache/work/uname/_pkg_.a" in \
        plan.files["importcfg.link"]
    assert all("$WORK" not in text for text in [plan.text, *plan.files.values()])


def test_a_dependency_missing_from_the_cache_is_refused() -> None:
    """Two compiles for one binary: a package it imports would be built on every first call."""
    script = SCRIPT.replace("cd /src\n", "cd /src\n/go/pkg/tool/linux_amd64/compile -o $WORK/b001/dep.a -p dep x.go\n")
    (action,) = parse_build_script(script, "/src").values()
    with pytest.raises(BuildError, match="not one compile and one link"):
        make_plan("uname", action, source="/src/cmds/uname", goarch="arm64", toolchain=("go1.24.4", 1, 1),
                  inputs={}, dirs=[])
