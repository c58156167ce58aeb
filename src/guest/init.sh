#!/bin/sh
# /init of the ferry guest (PID 1, run by busybox sh from the initramfs).
# Contract with the host side (see src/guest/DESIGN.md):
#   - prints exactly "ferry-guest: ready" once the guest is usable;
#   - then offers an interactive shell on the console with the prompt "ferry# ".
# Optional kernel parameters (the kernel leaves dotted names in /proc/cmdline for us):
#   ferry.ip=ADDR/PREFIX  address for eth0        ferry.gw=ADDR  default gateway

export PATH=/usr/bin:/bin
export HOME=/root
export TERM=vt100

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# Modules are listed dependencies-first by the image builder. A module that is missing or fails
# must not stop the boot: the console shell is still the best way to find out why.
kver=$(uname -r)
while read -r mod; do
	[ -n "$mod" ] && insmod "/lib/modules/$kver/$mod" 2>/dev/null
done < /etc/ferry/modules

hostname ferry
# The kernel gives lo 127.0.0.1/8 when it comes up; adding it again is harmless and explicit.
ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null

ferry_ip=
ferry_gw=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	ferry.ip=*) ferry_ip=${arg#ferry.ip=} ;;
	ferry.gw=*) ferry_gw=${arg#ferry.gw=} ;;
	esac
done
if [ -n "$ferry_ip" ]; then
	# Device probing can trail insmod slightly; give eth0 up to ~2 s to appear.
	n=0
	while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 20 ]; do
		usleep 100000
		n=$((n + 1))
	done
	if [ -e /sys/class/net/eth0 ]; then
		ip link set eth0 up
		ip addr add "$ferry_ip" dev eth0
		[ -n "$ferry_gw" ] && ip route add default via "$ferry_gw"
		# A page to fetch from outside: the quickest proof the VM answers at its address.
		sed -i "s/@HOSTNAME@/$(hostname)/g" /var/www/index.html
		httpd -p 80 -h /var/www
	else
		echo "ferry-guest: ferry.ip given but no eth0"
	fi
fi

echo "ferry-guest: ready"

export PS1='ferry# '
export ENV=/etc/ferry/shrc
while :; do
	# setsid + cttyhack make the console the shell's controlling tty, so Ctrl-C and job control
	# work. The shell runs in the foreground on purpose: a background job of a non-interactive
	# shell starts with SIGINT ignored, and that would be inherited by everything typed at the
	# prompt. (That is also why poweroff/reboot/halt are redefined in /etc/ferry/shrc to call
	# the reboot syscall: busybox's versions signal PID 1, i.e. this script, which cannot act
	# on a signal while it waits for the shell.)
	setsid cttyhack sh
	# Do not spin if the shell cannot start at all.
	sleep 1
done
