#!/bin/sh
# PID 1 of the minimal bootmatrix image: busybox, a few mounts, a readiness marker, a shell on the console.
# The harness waits for the marker line, then for the shell to answer; keep both stable.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for module in $(cat /etc/modules-load 2>/dev/null); do
    insmod "/lib/modules/$module" || echo "bootmatrix: failed to load module $module"
done
# Power button (ACPI on x86, gpio-keys on arm virt) -> /etc/acpi/PWRF/00000080 -> poweroff, so that a
# QMP system_powerdown ends the VM the way it ends a real distribution.
[ -d /etc/acpi ] && acpid -c /etc/acpi -l /tmp/acpid.log
# From here on only emergency kernel messages reach the console, so command output is not interleaved
# with kernel chatter; a panic (KERN_EMERG) still shows.
echo 1 > /proc/sys/kernel/printk
echo "BOOTMATRIX-READY arch=$(uname -m) kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
export PS1='bootmatrix# ' HOME=/root
while true; do
    setsid cttyhack /bin/sh
    echo "bootmatrix: console shell exited; starting another"
done
