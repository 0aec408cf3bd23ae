#!/bin/sh
# First stage of the A/B image (busybox initramfs, shared by both slots): map the slot the boot entry
# names through dm-verity with the root hash the entry carries, read it all (abagent open), mount its
# squashfs and switch_root into it. A slot that fails its hash is said on the console and the machine
# reboots, so the boot loader's counter for this entry goes down (it is never used half-checked).
# Where no systemd-boot chose the entry (SeaBIOS: syslinux passes bootmatrix.select), this stage
# chooses it from the ESP's entries and counts the try itself (abagent select).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /run /esp /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
for module in $(cat /etc/modules-load 2>/dev/null); do
    insmod "/lib/modules/$module" || echo "bootmatrix: failed to load module $module"
done
wait_for() {  # disks appear asynchronously: up to 30 s
    tries=0
    while [ ! -b "$1" ] && [ "$tries" -lt 300 ]; do
        tries=$((tries + 1))
        sleep 0.1
    done
}
options=/proc/cmdline
if grep -q "bootmatrix.select" /proc/cmdline; then
    mkdir -p /run/ab
    wait_for /dev/vda1
    if mount -t vfat -o rw /dev/vda1 /esp; then
        abagent select /esp/loader/entries /run/ab/cmdline && options=/run/ab/cmdline
        umount /esp
    fi
fi
slot="" verity=""
for word in $(cat "$options"); do
    case "$word" in
        bootmatrix.slot=*) slot="${word#*=}" ;;
        bootmatrix.verity=*) verity="${word#*=}" ;;
    esac
done
case "$slot" in
    a) device=/dev/vda2 ;;
    b) device=/dev/vda3 ;;
    *) echo "ab: no bootmatrix.slot in $options; rescue shell"; exec setsid cttyhack /bin/sh ;;
esac
wait_for "$device"
echo "ab: opening slot $slot ($device)"
if mapped=$(abagent open "$device" "$verity" ab-root) && mount -t squashfs -o ro "$mapped" /newroot; then
    echo "ab: slot $slot verified ($mapped); starting it"
    mount --move /dev /newroot/dev
    mount --move /run /newroot/run
    umount /proc /sys
    exec switch_root /newroot /sbin/init
fi
echo "ab: slot $slot refused: $mapped; rebooting"
sync
reboot -f
