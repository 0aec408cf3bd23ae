# Sourced by stage2.sh inside the root once every package is configured: what makes it the test system.
# The host, the user and the network are fixed; nothing here depends on when or where it runs.
echo bootmatrix-debian > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tbootmatrix-debian\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
cp $B/fstab /etc/fstab
mkdir -p /etc/systemd/network
cp $B/dhcp.network /etc/systemd/network/80-bootmatrix-dhcp.network
systemctl enable systemd-networkd.service
# The console login (root, as LAVA's and labgrid's Debian targets log in) and an unprivileged test user,
# both with the known password (docs/debian.md), hashed with a fixed salt: the same shadow line on
# every build.
hash=$(perl -e 'print crypt($ARGV[0], $ARGV[1])' "$(cat $B/password)" "$(cat $B/salt)")
usermod --password "$hash" root
useradd --create-home --shell /bin/bash --comment 'bootmatrix test user' --password "$hash" "$(cat $B/user)"
# busybox's wget, for downloads from the payload server (Debian's busybox installs no applet links).
ln -s /usr/bin/busybox /usr/local/bin/wget
