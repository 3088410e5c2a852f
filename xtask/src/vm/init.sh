#!/bin/sh
# PID 1 of the test guest: mount what balancer reads, load the NIC driver, run the checks,
# power off. xtask fills in @GUEST_COMMAND@ (guest-checks, or guest-bench for the benches).
export PATH=/usr/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
# The guest has no network time; the host passes its clock on the kernel command line.
[ -n "$BALANCER_EPOCH" ] && date -s "@$BALANCER_EPOCH" >/dev/null
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
@GUEST_COMMAND@
echo "init: the guest program exited with status $?"
poweroff -f
