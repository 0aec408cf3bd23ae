#!/bin/sh
# First stage of the A/B image (busybox initramfs, shared by both slots): map the slot the boot entry
# names through dm-verity with the root hash the entry carries, read it all (abagent open), mount its
# squashfs and switch_root into it. A slot that fails its hash is said on the console and the machine
# reboots, so the boot loader's counter for this entry goes down (it is never used half-checked).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/modules-load 2>/dev/null); do
    insmod "/lib/modules/$module" || echo "bootmatrix: failed to load module $module"
done
slot="" verity=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        bootmatrix.slot=*) slot="${word#*=}" ;;
        bootmatrix.verity=*) verity="${word#*=}" ;;
    esac
done
case "$slot" in
    a) device=/dev/vda2 ;;
    b) device=/dev/vda3 ;;
    *) echo "ab: no bootmatrix.slot on the command line; rescue shell"; exec setsid cttyhack /bin/sh ;;
esac
tries=0
while [ ! -b "$device" ] && [ "$tries" -lt 300 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
echo "ab: opening slot $slot ($device)"
if mapped=$(abagent open "$device" "$verity" ab-root) && mount -t squashfs -o ro "$mapped" /newroot; then
    echo "ab: slot $slot verified ($mapped); starting it"
    mount --move /dev /newroot/dev
    umount /proc /sys
    exec switch_root /newroot /sbin/init
fi
echo "ab: slot $slot refused: $mapped; rebooting"
sync
reboot -f
