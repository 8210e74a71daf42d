#!/usr/bin/env bash
# scripts/qemu.sh ELF [extra QEMU args...] — boot the hypervisor ELF on QEMU without firmware.
# This is cargo's runner (`cargo run`) and the embedded boot of scripts/run. It only runs QEMU:
# installs belong to scripts/setup. Semihosting is on so the hypervisor can exit with a status.
# HYP_CPU overrides the CPU model (default max).
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ $# -lt 1 ]; then
  echo "usage: scripts/qemu.sh HYP_ELF [QEMU ARGS...]"; exit 0
fi
elf=$1; shift
exec qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu "${HYP_CPU:-max}" -m "${HYP_MEM:-2G}" -smp "${HYP_SMP:-1}" -nic none \
  -nographic -semihosting-config enable=on,target=native -kernel "$elf" "$@"
