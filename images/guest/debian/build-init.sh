#!/bin/sh
# PID 1 of the Debian root's build VM (images/recipes/debian.py): busybox in our initramfs. The build
# tree the host unpacked is /dev/vda; the finished root filesystem is written to /dev/vdb. Everything
# Debian's own tools do (dpkg, every maintainer script, initramfs-tools, mke2fs) runs in a chroot of
# the tree, on the target arch, so no emulator is registered anywhere.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /target
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/modules-load 2>/dev/null); do
    insmod "/lib/modules/$module" || echo "bootmatrix-build: failed to load module $module"
done
echo 1 > /proc/sys/kernel/printk
finish() {
    echo "BOOTMATRIX-BUILD-END status=$1"
    sync
    umount /target/dev /target/sys /target/proc /target/run 2>/dev/null
    umount /target 2>/dev/null
    sync
    poweroff -f
}
mount -t ext4 /dev/vda /target || finish mount-failed
mount -t proc proc /target/proc
mount -t sysfs sysfs /target/sys
mount -t devtmpfs devtmpfs /target/dev
mount -t tmpfs -o mode=0755 tmpfs /target/run
echo "BOOTMATRIX-BUILD-START arch=$(uname -m) kernel=$(uname -r)"
if chroot /target /bin/sh /bootmatrix/stage2.sh; then finish ok; else finish "failed-$?"; fi
