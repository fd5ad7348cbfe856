#!/usr/bin/env bash
# Run one command as root on a second kernel: Debian 12's 6.1, under qemu
# with software emulation. The VM sees this machine's root file system
# read-only (with a throw-away overlay for writes), so the command can use
# the project's venv and BPF objects as they are.
#
#   tests/vm/boot.sh [--kernel 6.1.0-50-amd64] [--share DIR] -- COMMAND [ARGS...]
#
# --share DIR makes the host's DIR writable at the same path in the VM (for
# results to outlive it); --timeout S (default 3600) stops a VM that hangs.
#
# Exits with the command's exit code. Needs qemu-system-x86 and
# busybox-static (installed when missing) and downloads the kernel package
# from Debian once into $KTRAIL_VM_CACHE (default /var/cache/ktrail-vm).
# /dev/kvm is not used: on these machines it is kvm-pvm, which hangs a stock
# kernel, so boots take seconds and CPU-bound work runs 10-20x slower.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=6.1.0-50-amd64
mem=2048
share=
limit=3600
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --share) share=$(cd "$2" && pwd); shift 2 ;;
        --timeout) limit=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "boot.sh: unknown option '$1' (--kernel VERSION, --mem MB, --share DIR, --timeout S, -- COMMAND)" >&2
           exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "boot.sh: no command given (boot.sh -- COMMAND ...)" >&2; exit 2; }
cache=${KTRAIL_VM_CACHE:-/var/cache/ktrail-vm}/$kernel

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The kernel, once per version; the initramfs again whenever init changes.
if [ ! -f "$cache/vmlinuz" ] || [ ! -d "$cache/lib/modules/$kernel" ]; then
    rm -rf "$cache" && mkdir -p "$cache/pkg" "$cache/lib/modules"
    (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root \
        "linux-image-$kernel-unsigned" >/dev/null)
    dpkg-deb -x "$cache"/linux-image-*.deb "$cache/pkg"
    depmod -b "$cache/pkg" "$kernel"
    cp -a "$cache/pkg/lib/modules/$kernel" "$cache/lib/modules/"
    # Only the modules the init needs: the image stays small and boots fast.
    find "$cache/lib/modules/$kernel/kernel" -name '*.ko*' \
        ! -path '*/virtio/*' ! -path '*/9p/*' ! -path '*/netfs/*' \
        ! -path '*/fscache/*' ! -path '*/overlayfs/*' -delete
    cp "$cache/pkg/boot/vmlinuz-$kernel" "$cache/vmlinuz.tmp"
    rm -rf "$cache/pkg" "$cache"/linux-image-*.deb
    mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
fi
initrd=$cache/initrd-$(sha256sum "$here/init" | cut -c1-12).img
if [ ! -f "$initrd" ]; then
    tree=$(mktemp -d)
    mkdir -p "$tree/bin" "$tree/lib" "$tree"/{proc,sys,dev}
    cp -a "$cache/lib/modules" "$tree/lib/"
    cp /bin/busybox "$tree/bin/busybox"
    install -m 755 "$here/init" "$tree/init"
    (cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
    rm -rf "$tree" && mv "$initrd.tmp" "$initrd"
fi

out=$(mktemp -d /tmp/ktrail-vm.XXXXXX)
trap 'rm -rf "$out"' EXIT
printf '%s\n' "$PWD" > "$out/cwd"
share_dev=()
if [ -n "$share" ]; then
    printf '%s\n' "$share" > "$out/share"
    share_dev=(-fsdev "local,id=share,path=$share,security_model=none"
               -device virtio-9p-pci,fsdev=share,mount_tag=share)
fi
{ printf 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n'
  printf '%q ' "$@"; printf '\n'; } > "$out/cmd"

timeout "$limit" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$mem" -nographic -no-reboot \
    -bios /usr/share/qemu/qboot.rom -nic none \
    -kernel "$cache/vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1 init=/init" \
    -fsdev local,id=host,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=host,mount_tag=host \
    -fsdev local,id=out,path="$out",security_model=none \
    -device virtio-9p-pci,fsdev=out,mount_tag=out "${share_dev[@]}" \
    -serial mon:stdio -display none </dev/null | sed -u 's/\r$//'

[ -f "$out/rc" ] || { echo "boot.sh: the VM stopped without an exit code (or ran past --timeout $limit s)" >&2; exit 3; }
exit "$(cat "$out/rc")"
