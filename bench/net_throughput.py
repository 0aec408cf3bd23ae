"""Network throughput per arch over virtio-net + QEMU user networking, side by side with the host's own
loopback measured in the same run against the same server.

host->guest: the guest downloads a payload from the host's PayloadServer (10.0.2.2).
guest->host: the host downloads a file the guest serves with busybox httpd, through a forward.
loopback:    the host downloads the same payload from the same server over 127.0.0.1.

    .venv/bin/python bench/net_throughput.py [--runs 3] [--mib 16] [--arch riscv64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.deadline import Deadline
from harness.guestnet import GuestNet
from harness.net import Forward, UserNet
from harness.payload_server import PayloadServer
from matrix.firmware import DIRECT_FIRMWARE
from matrix.lab import Lab
from matrix.model import load_matrix


def host_download(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=300) as response:
        size = len(response.read())
    return size / 1e6 / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--arch", action="append", default=[])
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    lab = Lab()
    # One direct-kernel cell per arch (firmware cells are measured by `bootmatrix compare`).
    cells = [c for c in load_matrix() if c.media == "direct" and c.firmware == DIRECT_FIRMWARE[c.arch]
             and (not args.arch or c.arch in args.arch)]
    print(f"{'cell':26} {'host->guest':>12} {'guest->host':>12} {'loopback':>10}  MB/s, medians of {args.runs}; "
          f"{args.mib} MiB; ratios to loopback in brackets")
    with PayloadServer() as server, tempfile.TemporaryDirectory(prefix="bm-net-") as tmp:
        server.add_payload("blob", size, seed=1)
        for cell in cells:
            nic = UserNet(restrict=False, forwards=(Forward(80),))
            machine, record = lab.machine(cell, Path(tmp) / cell.id, nics=(nic,))
            to_guest, from_guest, loopback = [], [], []
            with machine:
                budget = lab.boot_budget(cell, record.accel)
                lab.boot(machine, record, Deadline.after(budget))
                net = GuestNet(machine.console, 300)
                net.dhcp()
                net.make_file("/srv/blob", size)
                net.serve("/srv", 80)
                port = machine.forwarded_ports()[("tcp", 80)]
                for _ in range(args.runs):
                    to_guest.append(net.fetch(server.url("/payload/blob")).megabytes_per_second)
                    from_guest.append(host_download(f"http://127.0.0.1:{port}/blob"))
                    loopback.append(host_download(server.url("/payload/blob", for_guest=False)))
            down, up, base = (statistics.median(x) for x in (to_guest, from_guest, loopback))
            print(f"{cell.id:26} {down:7.1f} ({down / base:4.2f}) {up:6.1f} ({up / base:4.2f}) {base:10.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
