#!/usr/bin/env bash
# Run one command as root on a second kernel: Debian 12's 6.1, under qemu
# with software emulation. The VM sees this machine's root file system
# read-only (with a throw-away overlay for writes), so the command can use
# the project's venv and BPF objects as they are.
#
#   tests/vm/boot.sh [--kernel 6.1.0-50-amd64] -- COMMAND [ARGS...]
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
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "boot.sh: unknown option '$1' (--kernel VERSION, --mem MB, -- COMMAND)" >&2; exit 2 ;;
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

# Kernel and initramfs, built once per kernel version.
if [ ! -f "$cache/initrd.img" ]; then
    rm -rf "$cache" && mkdir -p "$cache/pkg" "$cache/initrd/bin"
    (cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$kernel-unsigned" >/dev/null)
    dpkg-deb -x "$cache"/linux-image-*.deb "$cache/pkg"
    cp "$cache/pkg/boot/vmlinuz-$kernel" "$cache/vmlinuz"
    depmod -b "$cache/pkg" "$kernel"
    mkdir -p "$cache/initrd/lib/modules" "$cache/initrd"/{proc,sys,dev}
    cp -a "$cache/pkg/lib/modules/$kernel" "$cache/initrd/lib/modules/"
    # Only the modules the init needs: the image stays small and boots fast.
    find "$cache/initrd/lib/modules/$kernel/kernel" -name '*.ko*' \
        ! -path '*/virtio/*' ! -path '*/9p/*' ! -path '*/netfs/*' \
        ! -path '*/fscache/*' ! -path '*/overlayfs/*' -delete
    cp /bin/busybox "$cache/initrd/bin/busybox"
    cp "$here/init" "$cache/initrd/init"
    chmod +x "$cache/initrd/init"
    (cd "$cache/initrd" && find . | cpio -o -H newc --quiet | gzip -1) > "$cache/initrd.img.tmp"
    mv "$cache/initrd.img.tmp" "$cache/initrd.img"
    rm -rf "$cache/pkg" "$cache"/linux-image-*.deb
fi

out=$(mktemp -d /tmp/ktrail-vm.XXXXXX)
trap 'rm -rf "$out"' EXIT
printf '%s\n' "$PWD" > "$out/cwd"
{ printf 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n'
  printf '%q ' "$@"; printf '\n'; } > "$out/cmd"

qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$mem" -nographic -no-reboot \
    -bios /usr/share/qemu/qboot.rom -nic none \
    -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 init=/init" \
    -fsdev local,id=host,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=host,mount_tag=host \
    -fsdev local,id=out,path="$out",security_model=none \
    -device virtio-9p-pci,fsdev=out,mount_tag=out \
    -serial mon:stdio -display none </dev/null | tr -d '\r'

[ -f "$out/rc" ] || { echo "boot.sh: the VM stopped without an exit code" >&2; exit 3; }
exit "$(cat "$out/rc")"
