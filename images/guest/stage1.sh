#!/bin/sh
# First stage of the mostly-source image (busybox initramfs): load the disk and VFAT drivers, find the
# partition that holds this arch's Go init, mount it read-only, and hand over to it with switch_root.
# Failing to find it is said on the console with what was seen, then a rescue shell starts.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/modules-load 2>/dev/null); do
    insmod "/lib/modules/$module" || echo "bootmatrix: failed to load module $module"
done
case "$(uname -m)" in
    x86_64) goarch=amd64 ;;
    aarch64) goarch=arm64 ;;
    riscv64) goarch=riscv64 ;;
    *) goarch=unknown ;;
esac
init="/linux_$goarch/bin/init"
# Disks appear asynchronously (virtio, USB): look for up to 30 s.
tries=0
while [ "$tries" -lt 300 ]; do
    for device in /sys/class/block/*; do
        name="${device##*/}"
        [ -b "/dev/$name" ] || continue
        if mount -t vfat -o ro,shortname=mixed,utf8 "/dev/$name" /newroot 2>/dev/null; then
            if [ -x "/newroot$init" ]; then
                echo "bootmatrix: root is /dev/$name; starting $init"
                mount --move /dev /newroot/dev
                umount /proc /sys
                exec switch_root /newroot "$init"
            fi
            umount /newroot
        fi
    done
    tries=$((tries + 1))
    sleep 0.1
done
echo "bootmatrix: no VFAT partition holds $init (block devices: $(ls /sys/class/block | tr '\n' ' ')); rescue shell"
exec setsid cttyhack /bin/sh
