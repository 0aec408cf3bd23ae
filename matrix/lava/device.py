"""The device dictionary of a LAVA `qemu` device for one job's context.

A lab renders it with lava-server from its `qemu.jinja2` device type and the job's `context`; the
dispatcher (lava-run) only ever sees the rendered result, and it is not rendered again per job. The
device-type templates ship with lava-server, not with the dispatcher, so this renders the same shape
itself, following what the 2023.01 template does with a context:

- arm64/aarch64: `-cpu {cpu|cortex-a57} -machine {machine|virt}`; riscv64: `-machine {machine|virt}
  -cpu {cpu|rv64}`; amd64/x86_64: neither (machine and cpu are ignored, so an export carries them in
  `extra_options`), and `-cpu host -enable-kvm` unless `no_kvm`;
- then always `-nographic`, a NIC on user networking, `-m {memory|512}` and `-monitor none`, and
  `extra: extra_options`.

`command` is the QEMU the dispatcher runs: `qemu-system-<arch>` as a lab has it, or a wrapper of ours
for the pinned QEMU (local.py).
"""

from __future__ import annotations

from typing import Any

QEMU_ARCH = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64", "riscv64": "riscv64"}
AVAILABLE_ARCHITECTURES = ["amd64", "x86_64", "arm64", "aarch64", "riscv64"]
NIC = "-net nic,model=virtio,macaddr=52:54:00:12:34:58 -net user"


def qemu_options(context: dict[str, Any]) -> list[str]:
    """The `options` the lab's template makes of a context."""
    arch = context["arch"]
    options: list[str] = []
    if arch in ("arm64", "aarch64"):
        options += [f"-cpu {context.get('cpu', 'cortex-a57')}", f"-machine {context.get('machine', 'virt')}"]
    elif arch == "riscv64":
        options += [f"-machine {context.get('machine', 'virt')}", f"-cpu {context.get('cpu', 'rv64')}"]
    elif not context.get("no_kvm"):
        options += ["-cpu host", "-enable-kvm"]
    return [*options, "-nographic", NIC, f"-m {context.get('memory', 512)}", "-monitor none"]


def device_dict(context: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """The rendered device dictionary for `context` (a job's), running `command`."""
    arch = context["arch"]
    if arch not in QEMU_ARCH:
        raise ValueError(f"context.arch {arch!r} is not one of the device's available architectures")
    parameters: dict[str, Any] = {"command": command or f"qemu-system-{QEMU_ARCH[arch]}",
                                  "options": qemu_options(context)}
    if context.get("extra_options"):
        parameters["extra"] = list(context["extra_options"])
    return {
        "available_architectures": AVAILABLE_ARCHITECTURES,
        "actions": {
            "deploy": {"connections": {"serial": None}, "methods": {"image": {"parameters": {}}}},
            "boot": {"connections": {"serial": None}, "methods": {"qemu": {"parameters": parameters}}},
        },
        "constants": {
            "posix": {"lava_test_sh_cmd": "/bin/sh", "lava_test_results_dir": "/lava-%s",
                      "lava_test_shell_file": "~/.bashrc"},
            "shutdown-message": "The system is going down for reboot NOW",
            "kernel-start-message": "Linux version [0-9]",
            "default-shell-prompt": "lava-test: # ",
            "spawn_maxread": "4092",
            # One try: a cell that fails once has failed (bootmatrix reports; it does not retry).
            "failure_retry": 1,
            "boot_retry": 1,
        },
        "parameters": {"pass": None},
        "timeouts": {
            "actions": {"http-download": {"minutes": 5}, "boot-qemu-image": {"minutes": 5},
                        "auto-login-action": {"minutes": 5}},
            "connections": {"auto-login-action": {"minutes": 5}},
        },
    }
