#!/usr/bin/env bash
# native-stubs/power9/build-vfio.sh — the VFIO modules the emulated POWER9's VFIO checks load.
#
# A test-harness module, NOT part of kernel/'s series: Debian 12's 6.1 vfio cannot bind vfio-pci on
# powerpc (no iommu_ops there in 6.1; upstream fixed it in the kernel proper in v6.4), so
# vfio-powerpc-6.1.patch (beside this script) makes an out-of-tree vfio.ko that can. It is built the
# way kernel/build-kvm.sh builds kvm.ko: against Debian's packages of the very kernel it is for, and
# kept only if its vermagic and symbol CRCs are the stock vfio.ko's.
#   linux-headers-<abi>-<flavour>, -common (ppc64el)   .config, Module.symvers
#   linux-source-<x.y>                                   drivers/vfio
#   linux-kbuild-<x.y> (the build host's architecture)   fixdep, modpost …
#   linux-image-<abi>-<flavour>                          the stock VFIO modules (loaded beside it)
# Packages are fetched with `apt-get download`, unpacked with `dpkg-deb -x`, never installed; the
# compiler (gcc-12-powerpc64le-linux-gnu, or gcc-12 on ppc64el) is installed with apt-get if missing.
#
# usage: build-vfio.sh --kernel-package linux-image-6.1.0-50-powerpc64le --kernel-version 6.1.176-1
#          [--apt-config FILE] [--cache DIR]
# Output: $CACHE/vfio-<kernel version>-<12 hex digits of the sha256 of the patch, this script and kernel/kmod-lib.sh>/
#   *.ko        the patched vfio.ko and the stock modules it needs beside it (vfio-pci, its
#               dependencies, vfio_iommu_spapr_tce), uncompressed, debug info stripped
#   load-order  their file names, dependencies first (what the guest insmods, in order)
#   manifest    package versions, compiler, patch hash, vermagic
# The directory is printed on stdout, progress on stderr; a cached result costs nothing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATCH="$HERE/vfio-powerpc-6.1.patch"
T0=$(date +%s)
say() { printf 'build-vfio [%4ss]: %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'build-vfio: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=../../kernel/kmod-lib.sh
. "$HERE/../../kernel/kmod-lib.sh"   # tapt/hapt, host tools, versions, download, headers and source unpacking

KPKG= KVER= APTCONF=
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel-package) KPKG=$2; shift 2 ;;
    --kernel-version) KVER=$2; shift 2 ;;
    --apt-config)     APTCONF=$2; shift 2 ;;
    --cache)          CACHE=$2; shift 2 ;;
    *) die "unknown argument '$1' (see the comment at the top of $0)" ;;
  esac
done
[ -n "$KPKG" ] && [ -n "$KVER" ] || die "--kernel-package and --kernel-version are required"
kmod_parse_kernel
[ -f "$PATCH" ] || die "$PATCH not found"
KEY=$(cat "$PATCH" "${BASH_SOURCE[0]}" "$HERE/../../kernel/kmod-lib.sh" | sha256sum | cut -c1-12)
OUT="$CACHE/vfio-$KVER-$KEY"

mkdir -p "$CACHE"
exec 8>"$CACHE/vfio.lock"   # two builders of one cache take turns
flock 8
if [ -f "$OUT/load-order" ] && [ -f "$OUT/manifest" ]; then
  say "cached: $OUT"
  echo "$OUT"
  exit 0
fi
say "building vfio.ko for $KPKG $KVER with $(basename "$PATCH")"

tools=(make xz-utils kmod patch)
[ "$(dpkg --print-architecture)" = ppc64el ] || tools+=(binutils-powerpc64le-linux-gnu)   # its strip
kmod_host_tools "${tools[@]}"

W="$CACHE/vfio-work"
rm -rf "$W" "$OUT.new"
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/debs" "$W/hdr" "$W/src" "$W/image"
# Same-version packages only: the module ABI is the kernel's exact build.
kmod_download tapt "linux-source-$SERIES=$KVER" "linux-headers-$ABI-$FLAVOUR=$KVER" "linux-headers-$ABI-common=$KVER" "$KPKG=$KVER"
KBUILD_VER=$(kmod_pick_version hapt "linux-kbuild-$SERIES")
kmod_download hapt "linux-kbuild-$SERIES=$KBUILD_VER"
say "downloaded $(du -sh "$W/debs" | cut -f1) (linux-kbuild-$SERIES $KBUILD_VER)"

kmod_unpack_headers
kmod_unpack_source drivers/vfio
dpkg-deb -x "$W/debs/${KPKG}_"*.deb "$W/image"
REL=$(basename "$(ls -d "$W"/image/lib/modules/*)")
MODS="$W/image/lib/modules/$REL"
[ -f "$MODS/modules.dep" ] || depmod -b "$W/image" "$REL"
STOCK_VFIO=$(find "$MODS/kernel/drivers/vfio" -name 'vfio.ko*' | head -1)
[ -n "$STOCK_VFIO" ] || die "no stock vfio.ko in $KPKG"
case "$STOCK_VFIO" in *.xz|*.zst) die "compressed stock modules are not handled (Debian 12's are plain .ko)" ;; esac

(cd "$W/src" && patch -p1 --batch -s < "$PATCH") || die "$(basename "$PATCH") does not apply to linux-source-$SERIES $KVER"
say "make M=drivers/vfio modules (ARCH=powerpc CROSS_COMPILE=${CROSS:-none})"
make -C "$KDIR" M="$W/src/drivers/vfio" ARCH=powerpc CROSS_COMPILE="$CROSS" -j"$(nproc)" modules >"$W/make.log" 2>&1 \
  || { tail -n 30 "$W/make.log" >&2; die "make failed (log above)"; }
BUILT="$W/src/drivers/vfio/vfio.ko"
[ -f "$BUILT" ] || die "the build made no vfio.ko"

# Interchangeable with the stock vfio.ko: vermagic, imports (a subset, same CRCs), exports (the same set and CRCs).
want=$(modinfo -F vermagic "$STOCK_VFIO") got=$(modinfo -F vermagic "$BUILT")
[ "$got" = "$want" ] || die "vermagic differs: built '$got', stock vfio.ko '$want'"
modprobe --dump-modversions "$STOCK_VFIO" | sort -k2 > "$W/stock-imports"
modprobe --dump-modversions "$BUILT" | sort -k2 > "$W/imports"
extra=$(comm -23 "$W/imports" "$W/stock-imports" | tr '\n' ' ')
[ -z "$extra" ] || die "imports the stock vfio.ko does not have, or with other CRCs: $extra"
awk '$3 ~ /drivers\/vfio\/vfio$/ { print $1, $2 }' "$KDIR/Module.symvers" | sort > "$W/stock-exports"
awk '$3 ~ /vfio\/vfio$/ { print $1, $2 }' "$W/src/drivers/vfio/Module.symvers" | sort > "$W/exports"
[ -s "$W/stock-exports" ] && cmp -s "$W/exports" "$W/stock-exports" \
  || die "vfio.ko's exports differ from the stock module's: $(comm -3 "$W/exports" "$W/stock-exports" | tr -s ' \t\n' ' ')"
say "vermagic '$got'; $(wc -l < "$W/imports") imports and $(wc -l < "$W/exports") exports with the stock vfio.ko's CRCs"

# The stock modules around it, dependencies first (from modules.dep), minus what /init loads anyway
# for kvm (irqbypass …, skipped in the guest if already loaded).
order=()
add_mod() { # $1: path relative to $MODS
  local m=$1 d
  case " ${order[*]:-} " in *" $m "*) return ;; esac
  for d in $(awk -v m="$m" -F': *' '$1 == m { print $2 }' "$MODS/modules.dep"); do add_mod "$d"; done
  order+=("$m")
}
for want_mod in vfio-pci vfio_iommu_spapr_tce; do
  p=$(awk -F: -v n="/$want_mod.ko" 'substr($1, length($1) - length(n) + 1) == n { print $1; exit }' "$MODS/modules.dep")
  [ -n "$p" ] || die "$want_mod.ko not in $KPKG's modules.dep"
  add_mod "$p"
done
mkdir -p "$OUT.new"
for m in "${order[@]}"; do
  f=$(basename "$m")
  src="$MODS/$m"; [ "$f" = vfio.ko ] && src=$BUILT
  "${CROSS}strip" --strip-debug -o "$OUT.new/$f" "$src"
  echo "$f" >> "$OUT.new/load-order"
done
grep -qx vfio.ko "$OUT.new/load-order" || die "vfio.ko is not among vfio-pci's dependencies"
cat > "$OUT.new/manifest" <<EOF
kernel_package=$KPKG
kernel_version=$KVER
linux_source=linux-source-$SERIES $KVER
linux_kbuild=linux-kbuild-$SERIES $KBUILD_VER ($(dpkg --print-architecture))
compiler=$("${CROSS}gcc-12" --version | head -1)
patch=$(basename "$PATCH")
patch_sha256=$(sha256sum "$PATCH" | cut -d' ' -f1)
vermagic=$got
vfio_ko_sha256=$(sha256sum "$OUT.new/vfio.ko" | cut -d' ' -f1)
EOF
rm -rf "$OUT"
mv "$OUT.new" "$OUT"
say "built $OUT ($(tr '\n' ' ' < "$OUT/load-order"))"
echo "$OUT"
