#!/bin/sh
# Installs the Debian packages ferry needs on a fresh Debian bookworm (12) machine.
# Idempotent (apt-get install of installed packages is a no-op) and non-interactive; run as root.
# Node.js >= 20 is not in bookworm and is not installed here (see the check at the end).
set -eu

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps.sh: must run as root (try: sudo $0)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# One package per line with the reason it is needed.
PACKAGES="
apt
dpkg
debian-archive-keyring
ca-certificates
xz-utils
cpio
gcc-riscv64-linux-gnu
libc6-dev-riscv64-cross
qemu-user
qemu-system-misc
device-tree-compiler
iproute2
nbdkit
iputils-ping
nftables
"
# apt                      - the guest image builder runs apt-get/apt-cache with a private state dir
#                            to fetch Debian trixie riscv64 packages (kernel, busybox-static)
# dpkg                     - dpkg-deb extracts those .debs without installing them
# debian-archive-keyring   - verifies the trixie archive signatures (bookworm's keyring carries trixie keys)
# ca-certificates          - in case the host's Debian mirror is an https:// URL
# xz-utils                 - Debian ships kernel modules as .ko.xz; the initramfs gets them uncompressed
# cpio                     - tests round-trip ferry's own cpio writer through GNU cpio
# gcc-riscv64-linux-gnu    - cross-compiles ferry's guest programs (heartbeat, memwriter)
# libc6-dev-riscv64-cross  - riscv64 glibc headers and static libc for those programs (-static)
# qemu-user                - qemu-riscv64 runs the guest programs on the host in tests
# qemu-system-misc         - qemu-system-riscv64, a reference machine to compare our emulator with
# device-tree-compiler     - dtc decompiles/validates the device trees the emulator generates
# iproute2                 - ip(8) for host-side network setup (tap devices) in networking tests
# nbdkit                   - serves disk images over NBD for block-device migration tests
# iputils-ping             - ping(8) inside the lab's namespaces: reachability and RTT checks (src/lab)
# nftables                 - nft(8): the lab's LAN switch drops frames to emulate link loss and cut
#                            links (the machines' kernel has no netem, so tc cannot do loss there)

apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y --no-install-recommends $PACKAGES

if command -v node >/dev/null 2>&1; then
	major=$(node -p 'process.versions.node.split(".")[0]')
	if [ "$major" -lt 20 ]; then
		echo "install-deps.sh: warning: node $(node --version) found; ferry needs Node.js >= 20" >&2
	fi
else
	echo "install-deps.sh: note: Node.js >= 20 is required and was not found (bookworm's nodejs is 18)" >&2
fi
echo "install-deps.sh: done"
