"""The matrix on LAVA: each cell as a LAVA job (export.py) with the device dictionary a lab's qemu
device type renders for it (device.py), run locally by a real lava-dispatcher (local.py), and the
dispatcher's results read back into bootmatrix's own summary, JUnit and history (results.py)."""
