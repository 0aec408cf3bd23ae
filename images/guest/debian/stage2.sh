#!/bin/sh
# The Debian root's second stage, in a chroot of the build tree on the target arch (build-init.sh).
# The host unpacked every package's files so that dpkg can run; here dpkg installs every package again,
# properly: preinst, unpack, postinst, triggers, as debootstrap's second stage does. Then the system is
# configured, cleaned of what differs between builds, and written as a sorted, clamped tar that mke2fs
# turns into the root filesystem on /dev/vdb.
set -eu
B=/bootmatrix
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/root
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
# Perl (debconf, the maintainer scripts' helpers) with one hash order, so nothing it writes in hash
# order differs between builds.
export PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
SOURCE_DATE_EPOCH=$(cat $B/epoch)
export SOURCE_DATE_EPOCH
step() { echo "BOOTMATRIX-BUILD-STEP $*"; }

step ownership
# Unpacked on the host without root: everything belongs to root, directories get the owner and mode
# their package gives them (dpkg leaves an existing directory as it is).
find / -xdev -exec chown -h 0:0 {} +
perl -e 'while (<STDIN>) { chomp; my ($mode, $uid, $gid, $path) = split / /, $_, 4;
    chown($uid, $gid, "/$path") && chmod(oct($mode), "/$path") or die "/$path: $!\n" }' < $B/directories

cd $B/debs
step essential "$(wc -l < $B/essential) packages"
# base-passwd first: it writes /etc/passwd and /etc/group, which base-files' postinst needs.
dpkg --force-depends --install base-passwd_*.deb
dpkg --force-depends --install base-files_*.deb
dpkg --force-depends --unpack $(cat $B/essential)
dpkg --configure --pending --force-configure-any --force-depends
step rest "$(wc -l < $B/rest) packages"
dpkg --force-depends --unpack $(cat $B/rest)
dpkg --configure -a
# The kernel last, once initramfs-tools and every package with an initramfs hook is configured and
# their triggers have run: its postinst builds the one initrd (first, it would be built twice).
# Its initrd holds the modules QEMU's machines need to mount the root (MODULES=list): MODULES=most,
# Debian's default, copies every storage driver of the kernel: on arm64 under TCG, beside another
# build, one initrd had not been made after four minutes (docs/debian.md).
step kernel
echo MODULES=list > /etc/initramfs-tools/conf.d/bootmatrix.conf
cat $B/initramfs-modules >> /etc/initramfs-tools/modules
dpkg --install $(cat $B/kernel)
step audit
if [ -n "$(dpkg --audit)" ]; then dpkg --audit; exit 3; fi
bad=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | grep -v '^ii ' || true)
if [ -n "$bad" ]; then echo "not installed: $bad"; exit 4; fi
echo "BOOTMATRIX-BUILD-PACKAGES $(dpkg-query -W -f '.\n' | wc -l)"

step configure
. $B/configure.sh

step clean
cd /
# What records when or how often the build ran, or is made again at first boot.
rm -f /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log /var/cache/ldconfig/aux-cache
rm -f /var/cache/debconf/*-old /var/lib/dpkg/*-old /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow-
rm -rf /var/log/apt /var/cache/apt/*.bin /tmp/* /var/tmp/*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed

step tar
tar --create --file $B/root.tar --sort=name --format=gnu --numeric-owner --one-file-system \
    --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --exclude=./bootmatrix --exclude=./lost+found -C / .
mkdir -p $B/mnt
step tools
cd $B/tools
dpkg --install $(cat $B/tools.list)
step mkfs "$(stat -c %s $B/root.tar) bytes of tar"
blocks=$(( ($(stat -c %s $B/root.tar) * 5 / 4 + $(cat $B/spare-bytes)) / 4096 / 16384 * 16384 + 16384 ))
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -F -t ext4 -b 4096 -L debian-root -U "$(cat $B/fs-uuid)" \
    -E "hash_seed=$(cat $B/fs-uuid),root_owner=0:0,lazy_itable_init=0,nodiscard" -d $B/root.tar /dev/vdb "$blocks"
echo "BOOTMATRIX-BUILD-ROOT blocks=$blocks"
sync
