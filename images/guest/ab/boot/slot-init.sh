#!/bin/busybox sh
# PID 1 of an A/B slot (a read-only squashfs checked by dm-verity): mount the ESP and the data
# partition, run this version's health check, bless the boot entry when it passes (reboot when not, so
# the boot loader counts the try), then print the readiness marker and give the console a shell.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t tmpfs tmpfs /tmp
# /run is the initramfs's, moved here (it may hold the selector's choice); a tmpfs of its own otherwise.
/bin/busybox grep -q " /run " /proc/mounts || /bin/busybox mount -t tmpfs tmpfs /run
/bin/busybox mkdir -p /tmp/bin
/bin/busybox --install -s /tmp/bin
export PATH=/tmp/bin:/bin HOME=/tmp
options=/proc/cmdline
[ -f /run/ab/cmdline ] && options=/run/ab/cmdline  # the initramfs chose the entry (abagent select)
slot=$(sed -n 's/.*bootmatrix\.slot=\([ab]\).*/\1/p' "$options")
entry=$(sed -n 's/.*bootmatrix\.entry=\([^ ]*\).*/\1/p' "$options")
version=$(cat /etc/ab-release)
mount -t vfat -o rw,flush /dev/vda1 /efi || echo "ab: cannot mount the ESP"
mount -t ext4 -o rw /dev/vda4 /data || echo "ab: cannot mount the data partition"
echo "ab: booted slot $slot version $version entry $entry"
echo "slot $slot version $version entry $entry" >> /data/boots && sync  # the data partition is written every boot
if /etc/ab/health; then
    abagent bless
else
    echo "ab: health check failed for $entry (version $version); rebooting"
    umount /data /efi
    sync
    reboot -f
fi
echo 1 > /proc/sys/kernel/printk
echo "BOOTMATRIX-READY ab slot=$slot version=$version"
export PS1='ab# '
while true; do
    setsid cttyhack /bin/sh
    echo "ab: console shell exited; starting another"
done
