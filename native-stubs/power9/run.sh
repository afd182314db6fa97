#!/usr/bin/env bash
# native-stubs/power9/run.sh — `npm run test:power`
#
# Boots an emulated POWER9 host (QEMU powernv9, TCG) running Debian 12's ppc64el kernel with
# KVM-HV and the KVM XIVE native device, and runs guest-checks.mjs inside it under the ppc64el
# Node 18 from Debian. It boots twice: with Debian's stock modules (upstream's XIVE device), then
# with kvm.ko rebuilt with kernel/'s patch (kernel/build-kvm.sh). See README.md beside this file.
#
# Layers, all under ${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9/:
#   apt/        private apt state for ppc64el (never touches the system's apt or dpkg state)
#   base/       vmlinux + base.cpio.gz (busybox, Node 18 + libs, kvm modules, koffi) — built once
#   kmod-<kernel version>-<sha256 of the patch and kernel/build-kvm.sh, 12 digits>/
#               the patched kvm.ko (kernel/build-kvm.sh) — built once per kernel and patch
#   qemu-<sha256 of its .deb files and scripts, 12 digits>/
#               a real QEMU, its L2 kernel and initramfs for qemu-checks.mjs (build-qemu-layer.sh)
#   run/        pkg.cpio.gz (library package.json + dist, checks, /init), boot-<kind>.cpio.gz
#               (which kernel; the patched kvm.ko), console-stock.log, console-patched.log —
#               rebuilt on every run (cheap)
#
# Environment: XIVE_POWER9_TIMEOUT (boot timeout, s; default 600), XIVE_POWER9_REFRESH=1 (rebuild
# the base layer), XIVE_POWER9_VERBOSE=1 (stream the guest console to stderr),
# XIVE_POWER9_KOFFI (npm spec installed for ppc64le; default: the koffi version package-lock.json
# pins, so the guest runs the same koffi as the host's tests; see README), XIVE_POWER9_CHECKS (one
# or more .mjs files, space-separated, run in the guest instead of the boot's own list, for developing
# checks; in both boots),
# XIVE_POWER9_KERNEL=stock|patched|both (which boots; default both; the guest's checks get it as
# XIVE_POWER9_KERNEL too).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
BOOT_TIMEOUT=${XIVE_POWER9_TIMEOUT:-600}
KERNELS=${XIVE_POWER9_KERNEL:-both}
LOCKED_KOFFI=$(node -p 'require(process.argv[1]).packages["node_modules/koffi"].version' "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/package-lock.json" 2>/dev/null || true)
KOFFI_SPEC=${XIVE_POWER9_KOFFI:-koffi@${LOCKED_KOFFI:-3}}
# Bump when the way the base layer is built changes: forces a rebuild of base/.
BASE_LAYER_VERSION=1
DEB_MIRROR=http://deb.debian.org/debian
DEB_SECURITY=http://deb.debian.org/debian-security
DEB_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
HOST_PACKAGES=(qemu-system-ppc qemu-system-data cpio gzip xz-utils zstd kmod debian-archive-keyring)
END_MARKER=XIVE-POWER9-GUEST-END

T0=$(date +%s)
say() { printf 'power9 [%4ss]: %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'power9: error: %s\n' "$*" >&2; exit 1; }
skip() { printf 'power9: skipped: %s\n' "$*"; exit 0; }
case "$KERNELS" in
  both) BOOTS=(stock patched) ;;
  stock|patched) BOOTS=("$KERNELS") ;;
  *) die "XIVE_POWER9_KERNEL='$KERNELS': expected stock, patched or both" ;;
esac

# --- 1. preconditions and host packages ------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "not running as root (needed to apt-get install qemu-system-ppc)"
command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this host (a Debian/Ubuntu host is needed)"
command -v npm >/dev/null 2>&1 || skip "no npm on this host (needed to fetch koffi for ppc64le)"

missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || say "warning: apt-get update reported errors (continuing)"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
QEMU=$(command -v qemu-system-ppc64) || die "qemu-system-ppc64 not found after install"
SKIBOOT=/usr/share/qemu/skiboot.lid
[ -f "$SKIBOOT" ] || die "$SKIBOOT missing (package qemu-system-data)"

mkdir -p "$CACHE"
# One runner at a time per cache (and never two qemus on a 2-core box).
exec 9>"$CACHE/lock"
flock 9
APT="$CACHE/apt"
BASE="$CACHE/base"
RUN="$CACHE/run"

# --- 2. private apt state for ppc64el ----------------------------------------------------------
setup_apt() {
  mkdir -p "$APT"/etc/apt.conf.d "$APT"/etc/sources.list.d "$APT"/etc/preferences.d \
    "$APT"/state/lists/partial "$APT"/cache/archives/partial "$APT"/log
  [ -f "$APT/status" ] || : > "$APT/status"
  local suite
  : > "$APT/etc/sources.list"
  for suite in bookworm bookworm-updates; do
    echo "deb [arch=ppc64el signed-by=$DEB_KEYRING] $DEB_MIRROR $suite main" >> "$APT/etc/sources.list"
  done
  echo "deb [arch=ppc64el signed-by=$DEB_KEYRING] $DEB_SECURITY bookworm-security main" >> "$APT/etc/sources.list"
  # APT_CONFIG is read before /etc/apt/apt.conf.d, so Dir::Etc::parts below keeps every system
  # setting (proxies aside, docker-clean hooks, …) out of this private state.
  cat > "$APT/apt.conf" <<EOF
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$APT/etc/apt.conf.d";
Dir::Etc::sourcelist "$APT/etc/sources.list";
Dir::Etc::sourceparts "$APT/etc/sources.list.d";
Dir::Etc::preferences "$APT/etc/preferences";
Dir::Etc::preferencesparts "$APT/etc/preferences.d";
Dir::State "$APT/state";
Dir::State::lists "$APT/state/lists";
Dir::State::status "$APT/status";
Dir::Cache "$APT/cache";
Dir::Cache::archives "$APT/cache/archives";
Dir::Log "$APT/log";
APT::Architecture "ppc64el";
APT::Architectures { "ppc64el"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Sandbox::User "root";
Debug::NoLocking "true";
Acquire::Languages "none";
EOF
}
papt() { APT_CONFIG="$APT/apt.conf" "$@"; }

# --- 3..4. base layer: kernel, Node 18 + libs, busybox, kvm modules, koffi ---------------------
build_base() {
  say "base layer: refreshing private ppc64el apt lists"
  setup_apt
  # A suite whose index fails (e.g. a mirror mid-sync) is tolerated as long as bookworm main is there.
  if ! papt apt-get update -qq >"$APT/log/update.log" 2>&1; then
    say "warning: apt-get update (ppc64el) reported errors; continuing with the lists it got:"
    grep -E '^(E|W):' "$APT/log/update.log" | head -3 | sed 's/^/    /' >&2 || true
  fi
  ls "$APT"/state/lists/*_bookworm_main_binary-ppc64el_Packages* >/dev/null 2>&1 \
    || die "no ppc64el package list for bookworm main (see $APT/log/update.log)"

  local kpkg kver
  kpkg=$(papt apt-cache depends linux-image-powerpc64le \
    | awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-powerpc64le$/ { print $2; exit }')
  [ -n "$kpkg" ] || die "could not resolve linux-image-powerpc64le to a kernel package"
  kver=$(papt apt-cache policy "$kpkg" | awk '$1 == "Candidate:" { print $2 }')
  say "base layer: kernel package $kpkg $kver"

  rm -rf "$BASE.new"
  mkdir -p "$BASE.new"/debs "$BASE.new"/root "$BASE.new"/kernel "$BASE.new"/stage
  # The kernel alone (its own Depends — kmod, initramfs-tools … — are for a real install).
  (cd "$BASE.new/debs" && papt apt-get download -qq "$kpkg") || die "download of $kpkg failed"
  # Userland: apt resolves the closure (Node's runtime libraries …) against an empty dpkg status.
  rm -f "$APT"/cache/archives/*.deb
  papt apt-get install -d -y -qq busybox-static nodejs >"$APT/log/install.log" 2>&1 \
    || { cat "$APT/log/install.log" >&2; die "apt-get install -d (ppc64el) failed"; }
  local deb pkgs=()
  for deb in "$APT"/cache/archives/*.deb; do
    pkgs+=("$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)")
    dpkg-deb -x "$deb" "$BASE.new/root"
  done
  rm -f "$APT"/cache/archives/*.deb
  say "base layer: userland from ${#pkgs[@]} packages: ${pkgs[*]}"
  dpkg-deb -x "$BASE.new"/debs/*.deb "$BASE.new/kernel"
  rm -f "$BASE.new"/debs/*.deb

  # Kernel image and KVM modules (Debian ships no modules.dep: make one with the host's depmod).
  local kimg kdir rel m
  kimg=$(ls "$BASE.new"/kernel/boot/vmlinux-* | head -1)
  kdir=$(ls -d "$BASE.new"/kernel/lib/modules/* | head -1)
  rel=$(basename "$kdir")
  cp "$kimg" "$BASE.new/vmlinux"
  [ -f "$kdir/modules.dep" ] || depmod -b "$BASE.new/kernel" "$rel"
  local -a load=()
  resolve_mod() { # appends $1 (path relative to $kdir) after its dependencies, once
    local mod=$1 dep deps
    case " ${load[*]:-} " in *" $mod "*) return ;; esac
    deps=$(awk -v m="$mod" -F': *' '$1 == m { print $2 }' "$kdir/modules.dep")
    for dep in $deps; do resolve_mod "$dep"; done
    load+=("$mod")
  }
  for m in kvm kvm-hv; do
    rel_path=$(awk -F: -v n="/$m.ko" '{ k = $1; sub(/\.(xz|zst|gz)$/, "", k) }
      substr(k, length(k) - length(n) + 1) == n { print $1; exit }' "$kdir/modules.dep")
    [ -n "$rel_path" ] || die "module $m not found in $kdir/modules.dep"
    resolve_mod "$rel_path"
  done
  local R="$BASE.new/stage" f dst
  mkdir -p "$R/lib/modules/$rel" "$R/etc"
  : > "$R/etc/kvm-modules"
  for f in "${load[@]}"; do
    dst="$R/lib/modules/$rel/$(basename "$f")"
    case "$f" in  # busybox insmod takes a plain .ko: decompress on the host
      *.ko.xz)  xz -dc "$kdir/$f" > "${dst%.xz}"; dst=${dst%.xz} ;;
      *.ko.zst) zstd -qdc "$kdir/$f" > "${dst%.zst}"; dst=${dst%.zst} ;;
      *.ko.gz)  gzip -dc "$kdir/$f" > "${dst%.gz}"; dst=${dst%.gz} ;;
      *)        cp "$kdir/$f" "$dst" ;;
    esac
    echo "/lib/modules/$rel/$(basename "$dst")" >> "$R/etc/kvm-modules"
  done
  say "base layer: modules to load: $(tr '\n' ' ' < "$R/etc/kvm-modules")"

  # Userland tree: busybox, Node 18 and its shared libraries (with /lib64/ld64.so.2).
  (cd "$BASE.new/root" && tar -c --exclude=./usr/share/doc --exclude=./usr/share/man \
     --exclude=./usr/share/lintian --exclude=./usr/share/locale --exclude=./usr/share/bug \
     --exclude=./usr/share/info .) | tar -x -C "$R"
  [ -x "$R/usr/bin/node" ] || die "ppc64el node missing from the extracted nodejs package"
  [ -e "$R/lib64/ld64.so.2" ] || [ -L "$R/lib64/ld64.so.2" ] || die "/lib64/ld64.so.2 missing"
  [ -x "$R/bin/busybox" ] || die "busybox missing from busybox-static"
  ln -sf busybox "$R/bin/sh"
  mkdir -p "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/sbin" "$R/usr/sbin" "$R/opt"

  # koffi for linux ppc64le into a staging prefix; it becomes /opt/xive-remap/node_modules.
  say "base layer: npm install --os=linux --cpu=ppc64 $KOFFI_SPEC"
  local npmstage="$BASE.new/npm"
  mkdir -p "$npmstage"
  npm install --os=linux --cpu=ppc64 --ignore-scripts --no-audit --no-fund --loglevel=error \
    --prefix "$npmstage" "$KOFFI_SPEC" >&2
  local knode
  knode=$(cd "$npmstage" && find node_modules -path '*linux_ppc64le/koffi.node' | head -1)
  [ -n "$knode" ] || die "$KOFFI_SPEC has no linux_ppc64le/koffi.node (koffi 2.x ships none; use koffi@3)"
  local kofv
  kofv=$(node -p "require('$npmstage/node_modules/koffi/package.json').version")
  say "base layer: koffi $kofv, native module $knode"
  mkdir -p "$R/opt/xive-remap"
  cp -a "$npmstage/node_modules" "$R/opt/xive-remap/node_modules"
  # Lets anything under /opt (e.g. /opt/checks) import('xive-remap') by name.
  mkdir -p "$R/opt/node_modules"
  ln -s ../xive-remap "$R/opt/node_modules/xive-remap"

  (cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    | gzip -1 > "$BASE.new/base.cpio.gz"
  cat > "$BASE.new/manifest" <<EOF
layer=$BASE_LAYER_VERSION
koffi_spec=$KOFFI_SPEC
kernel_package=$kpkg
kernel_version=$kver
kernel_release=$rel
koffi_version=$kofv
koffi_native=$knode
packages=${pkgs[*]}
EOF
  rm -rf "$BASE.new/root" "$BASE.new/kernel" "$BASE.new/stage" "$BASE.new/npm" "$BASE.new/debs"
  rm -f "$APT"/cache/*.bin  # apt's binary caches: rebuilt from the lists when next needed
  rm -rf "$BASE"
  mv "$BASE.new" "$BASE"
  say "base layer: built ($(du -h "$BASE/base.cpio.gz" | cut -f1) initramfs, $(du -h "$BASE/vmlinux" | cut -f1) vmlinux)"
}

manifest() { sed -n "s/^$1=//p" "$BASE/manifest" 2>/dev/null; }
if [ "${XIVE_POWER9_REFRESH:-0}" = 1 ] || [ ! -f "$BASE/base.cpio.gz" ] || [ ! -f "$BASE/vmlinux" ] \
   || [ "$(manifest layer)" != "$BASE_LAYER_VERSION" ] || [ "$(manifest koffi_spec)" != "$KOFFI_SPEC" ]; then
  build_base
else
  say "base layer: cached ($(manifest kernel_package) $(manifest kernel_version), koffi $(manifest koffi_version))"
fi

# --- 4a. which kernels to boot; the patched kvm.ko ---------------------------------------------
# stock: Debian's modules as they are; patched: kvm.ko built from the same Debian kernel's sources
# with kernel/'s patch (kernel/build-kvm.sh, cached by kernel version + patch), Debian's kvm-hv.ko.
KREL=$(manifest kernel_release)
PATCHED_KO=
if [[ " ${BOOTS[*]} " == *" patched "* ]]; then
  # Root and apt are there (checked above), so a build that cannot run is a failure, not a skip.
  PATCHED_KO=$(bash "$REPO/kernel/build-kvm.sh" --kernel-package "$(manifest kernel_package)" \
    --kernel-version "$(manifest kernel_version)" --apt-config "$APT/apt.conf" --cache "$CACHE") \
    || die "could not build the patched kvm.ko (kernel/build-kvm.sh, output above)"
  say "patched kvm.ko: $PATCHED_KO"
fi

# --- 4a'. the kernel selftest (kernel/selftests), cross-built static for the guest ----------------
# Both boots run it twice: as xive-selftest (all its checks but the crash case; on the stock boot
# what the kernel lacks is printed as TAP "# TODO" lines, counted apart, not as passes) and, after
# every other script, as xive-selftest-crash (one load through a MAP_PRIVATE ESB mapping, in a child).
build_selftest() { # DIR: puts xive_native_mmap there
  local cc=powerpc64le-linux-gnu-gcc-12 p missing=()
  [ "$(dpkg --print-architecture)" = ppc64el ] && cc=gcc-12
  for p in gcc-12-powerpc64le-linux-gnu libc6-dev-ppc64el-cross make; do
    [ "$cc" = gcc-12 ] && [ "$p" != make ] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing host packages for the selftest: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed (needed to build kernel/selftests)"
  fi
  make -s -C "$REPO/kernel/selftests" CC="$cc" O="$1" >&2 || die "could not build kernel/selftests/xive_native_mmap"
  say "selftest: built $(basename "$1")/xive_native_mmap ($(du -h "$1/xive_native_mmap" | cut -f1), static, $cc)"
}
# --- 4a'. the VFIO modules of vfio-checks.mjs (both boots) -----------------------------------------
# A test-harness vfio.ko that binds on powerpc 6.1 (build-vfio.sh beside this script; not part of
# kernel/'s series) and the stock VFIO modules around it; they go to /opt/vfio-modules in the run layer.
VFIO_MODULES=$(bash "$HERE/build-vfio.sh" --kernel-package "$(manifest kernel_package)" \
  --kernel-version "$(manifest kernel_version)" --apt-config "$APT/apt.conf" --cache "$CACHE") \
  || die "could not build the VFIO modules (native-stubs/power9/build-vfio.sh, output above)"
say "VFIO modules: $VFIO_MODULES"

# --- 4b. run layer: library package, checks, /init ---------------------------------------------
rm -rf "$RUN"
mkdir -p "$RUN/stage/opt/xive-remap" "$RUN/stage/opt/checks"
S="$RUN/stage"
if [ -f "$REPO/package.json" ]; then
  cp "$REPO/package.json" "$S/opt/xive-remap/"
else
  say "note: $REPO/package.json not found; /opt/xive-remap has node_modules only"
fi
if [ -d "$REPO/dist" ]; then
  cp -a "$REPO/dist" "$S/opt/xive-remap/dist"
else
  say "note: $REPO/dist does not exist (run 'npm run build'); the guest gets no compiled library"
fi
# The checks each boot runs, in order, one Node process each (a crash in one cannot hide another's
# results); each prints its own closing "<name>: N passed, N failed" line, and verdict() wants one
# per script. approach3-checks.mjs needs a kernel/ patched kvm.ko, so only the patched boot runs it.
# qemu-checks.mjs comes first: its hot-plug got stuck less often in a freshly booted host (see there).
STOCK_CHECKS=(qemu-checks.mjs guest-checks.mjs ppc-guest-checks.mjs vmm-hotplug-checks.mjs vfio-checks.mjs xive-selftest)
PATCHED_CHECKS=(qemu-checks.mjs guest-checks.mjs ppc-guest-checks.mjs approach3-checks.mjs vmm-hotplug-checks.mjs vfio-checks.mjs xive-selftest)
# After every script of the list, in both boots: the selftest's crash case (see selftest_verdict).
CRASH_CHECK=xive-selftest-crash
if [ -n "${XIVE_POWER9_CHECKS:-}" ]; then
  read -r -a custom <<<"$XIVE_POWER9_CHECKS"
  STOCK_CHECKS=() PATCHED_CHECKS=() CRASH_CHECK=
  for f in "${custom[@]}"; do
    [ -f "$f" ] || die "checks script $f not found"
    cp "$f" "$S/opt/checks/"
    STOCK_CHECKS+=("$(basename "$f")") PATCHED_CHECKS+=("$(basename "$f")")
  done
  say "running ${STOCK_CHECKS[*]} in the guest instead of the boots' own checks"
else
  for f in "${PATCHED_CHECKS[@]}" "$CRASH_CHECK"; do cp "$HERE/$f" "$S/opt/checks/"; done
  build_selftest "$S/opt/checks"
fi
cp "$HERE/check-harness.mjs" "$S/opt/checks/"   # what the scripts import their check() from
cp -a "$VFIO_MODULES" "$S/opt/vfio-modules"       # vfio-checks.mjs insmods them (load-order)
# A real QEMU, its L2 kernel and initramfs for qemu-checks.mjs (build-qemu-layer.sh, cached by the
# package versions): a layer of the initrd when a boot runs that script.
QEMU_LAYER=
if [[ " ${STOCK_CHECKS[*]} ${PATCHED_CHECKS[*]} " == *" qemu-checks.mjs "* ]]; then
  QEMU_LAYER=$(bash "$HERE/build-qemu-layer.sh" --apt-config "$APT/apt.conf" --base "$BASE" --cache "$CACHE") \
    || die "could not build the QEMU layer (native-stubs/power9/build-qemu-layer.sh, output above)"
  say "qemu layer: $QEMU_LAYER ($(du -h "$QEMU_LAYER" | cut -f1))"
fi
cat > "$S/init" <<EOF
#!/bin/sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export LD_LIBRARY_PATH=/lib/powerpc64le-linux-gnu:/usr/lib/powerpc64le-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /root
# stock or patched: written by run.sh into this boot's own initramfs layer.
export XIVE_POWER9_KERNEL=\$(cat /etc/xive-power9-kernel 2>/dev/null || echo unknown)
echo "power9-guest: XIVE_POWER9_KERNEL=\$XIVE_POWER9_KERNEL"
echo "power9-guest: kernel \$(uname -r) on \$(grep -m1 '^cpu' /proc/cpuinfo | sed 's/.*: //')"
while read -r m; do
  insmod "\$m" || echo "power9-guest: insmod \$m failed"
done < /etc/kvm-modules
kvm_ko=\$(grep '/kvm\.ko\$' /etc/kvm-modules)
# Taint flags: O (out of tree) and E (unsigned) tell a locally built kvm.ko from Debian's.
echo "power9-guest: kvm.ko sha256 \$(sha256sum "\$kvm_ko" | cut -c1-16), loaded with taint flags '\$(cat /sys/module/kvm/taint 2>/dev/null)'"
[ -c /dev/kvm ] && echo "power9-guest: /dev/kvm present" || echo "power9-guest: /dev/kvm missing"
cd /opt/checks
for c in \$(cat /etc/xive-power9-checks); do
  echo "power9-guest: uptime \$(cut -d' ' -f1 /proc/uptime) s: running \$c"
  case "\$c" in *.mjs) node "/opt/checks/\$c" 2>&1 ;; *) "/opt/checks/\$c" 2>&1 ;; esac
  echo "power9-guest: \$c exit status \$? (uptime \$(cut -d' ' -f1 /proc/uptime) s)"
done
dmesg | grep -i -E 'kvm|xive' | tail -n 20 | sed 's/^/power9-guest: dmesg: /'
echo "$END_MARKER"
sync
poweroff -f
echo o > /proc/sysrq-trigger
EOF
chmod 755 "$S/init"
(cd "$S" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$RUN/pkg.cpio.gz"
rm -rf "$S"

# --- 4c. boot layer: which kernel this boot is ---------------------------------------------------
# The kernel unpacks concatenated archives in order and a later file replaces an earlier one of the
# same path: the patched kvm.ko takes the place of base's, so /etc/kvm-modules stays as it is.
# boot() runs as `boot … || rc=1`, where bash ignores `set -e`: every step that can fail says so itself.
boot_layer() { # KIND -> $RUN/boot-KIND.cpio.gz
  local kind=$1 B="$RUN/boot-$1"
  rm -rf "$B"
  mkdir -p "$B/etc" || return 1
  echo "$kind" > "$B/etc/xive-power9-kernel" || return 1
  if [ "$kind" = patched ]; then echo "${PATCHED_CHECKS[*]} $CRASH_CHECK"; else echo "${STOCK_CHECKS[*]} $CRASH_CHECK"; fi > "$B/etc/xive-power9-checks" || return 1
  if [ "$kind" = patched ]; then
    mkdir -p "$B/lib/modules/$KREL" && cp "$PATCHED_KO" "$B/lib/modules/$KREL/kvm.ko" || return 1
  fi
  (cd "$B" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$B.cpio.gz" || return 1
  rm -rf "$B"
}

# --- 5. boot --------------------------------------------------------------------------------------
boot() { # KIND: boots once, console in $RUN/console-KIND.log
  local kind=$1 log="$RUN/console-$1.log"
  boot_layer "$kind" || { printf 'power9: %s: FAIL: could not build the boot layer\n' "$kind"; TOTAL_FAILED=$((TOTAL_FAILED + 1)); return 1; }
  # The run layer is small and comes after the base; this boot's layer comes last.
  cat "$BASE/base.cpio.gz" ${QEMU_LAYER:+"$QEMU_LAYER"} "$RUN/pkg.cpio.gz" "$RUN/boot-$kind.cpio.gz" > "$RUN/initrd" \
    || { printf 'power9: %s: FAIL: could not write the initrd\n' "$kind"; TOTAL_FAILED=$((TOTAL_FAILED + 1)); return 1; }
  say "$kind: booting powernv9 (TCG) with $(manifest kernel_package) — timeout ${BOOT_TIMEOUT}s, console: $log"
  # 4G: qemu-checks.mjs runs a 512 MiB KVM guest under QEMU beside the checks' Node processes.
  timeout -k 10 "$BOOT_TIMEOUT" "$QEMU" -machine powernv9 -accel tcg -smp 1 -m 4G -nographic \
    -bios "$SKIBOOT" -kernel "$BASE/vmlinux" -initrd "$RUN/initrd" \
    -device edu,bus=pcie.0,addr=0x0 \
    -append "console=hvc0 rdinit=/init loglevel=4" </dev/null >"$log" 2>&1 &
  local qpid=$! tpid= ended_at= qrc
  if [ "${XIVE_POWER9_VERBOSE:-0}" = 1 ]; then
    tail -n +1 -f --pid="$qpid" "$log" >&2 &
    tpid=$!
  fi
  while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$ended_at" ] && grep -q "^$END_MARKER" "$log" 2>/dev/null; then ended_at=$(date +%s); fi
    # The guest powers itself off; if the machine lingers after the end marker, stop it.
    if [ -n "$ended_at" ] && [ $(($(date +%s) - ended_at)) -ge 15 ]; then kill "$qpid" 2>/dev/null || true; fi
    sleep 1
  done
  set +e
  wait "$qpid"
  qrc=$?
  set -e
  [ -n "$tpid" ] && { kill "$tpid" 2>/dev/null || true; }
  rm -f "$RUN/initrd"
  say "$kind: qemu exited (status $qrc)"
  verdict "$kind" "$qrc"
}

# --- pass / fail of one boot ----------------------------------------------------------------------
# Prints the boot's ok/not ok lines and its closing line labelled with the kind ("stock: 18 passed,
# 0 failed"); returns 1 (and shows the console's end) if it failed. Adds to TOTAL_PASSED/FAILED.
TOTAL_PASSED=0 TOTAL_FAILED=0
verdict() {
  local kind=$1 qrc=$2 txt="$RUN/console-$1.txt" summary np nf
  tr -d '\r' < "$RUN/console-$kind.log" > "$txt"
  grep -E '^(ok|not ok) - ' "$txt" || true
  local -a scripts
  if [ "$kind" = patched ]; then scripts=("${PATCHED_CHECKS[@]}"); else scripts=("${STOCK_CHECKS[@]}"); fi
  # One closing line per script, labelled with the script's name; the boot's figures are their sums.
  summary=$(grep -E '^[A-Za-z][A-Za-z0-9_-]*: [0-9]+ passed, [0-9]+ failed' "$txt" || true)
  failed() {
    printf 'power9: %s: FAIL: %s\n' "$kind" "$1"
    echo "---- last 40 console lines ($RUN/console-$kind.log) ----" >&2
    tail -n 40 "$txt" >&2
    TOTAL_FAILED=$((TOTAL_FAILED + ${nf:-1}))
    return 1
  }
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    [ -n "$summary" ] || failed "timed out after ${BOOT_TIMEOUT}s" || return 1
  fi
  local s missing=() bad=()
  for s in "${scripts[@]}"; do
    grep -q "^${s%.mjs}: [1-9][0-9]* passed" <<<"$summary" || missing+=("$s")
    # A script that crashed after its closing line, or set a failing exit status, fails the boot too.
    grep -q "^power9-guest: $s exit status 0 " "$txt" || bad+=("$s")
  done
  [ ${#missing[@]} = 0 ] || failed "no closing 'N passed, N failed' line with at least one check passed from ${missing[*]}" || return 1
  [ ${#bad[@]} = 0 ] || failed "non-zero exit status from ${bad[*]}" || return 1
  echo "$summary" | sed "s/^/$kind: /"
  np=$(grep -oE '[0-9]+ passed' <<<"$summary" | awk '{ n += $1 } END { print n + 0 }')
  nf=$(grep -oE '[0-9]+ failed' <<<"$summary" | awk '{ n += $1 } END { print n + 0 }')
  TOTAL_PASSED=$((TOTAL_PASSED + np))
  echo "$kind: $np passed, $nf failed"
  [ "$nf" = 0 ] || failed "$nf check(s) failed in the guest" || return 1
  ! grep -qE '^not ok - ' "$txt" || { nf=1; failed "a check printed 'not ok'"; } || return 1
  # The boot must have run the kvm.ko it was meant to.
  if [ "$kind" = patched ]; then
    grep -q "^power9-guest: kvm.ko sha256 $(sha256sum "$PATCHED_KO" | cut -c1-16), loaded with taint flags '[A-Z]*O" "$txt" \
      || { nf=1; failed "the guest did not load the patched kvm.ko ($PATCHED_KO)"; } || return 1
  else
    ! grep -q "^power9-guest: kvm.ko sha256 .*taint flags '[A-Z]*O" "$txt" \
      || { nf=1; failed "the stock boot loaded an out-of-tree kvm.ko"; } || return 1
  fi
  [ -z "$CRASH_CHECK" ] || selftest_verdict "$kind" "$txt" || { nf=1; failed "$SELFTEST_WHY"; } || return 1
  say "$kind: passed"
}

# --- the kernel selftest's lines, and its crash case ---------------------------------------------
# Shows the selftest's TAP lines (xive-selftest's closing line is counted by verdict like any
# script's). Then the crash case, which only a kernel with kernel/'s series survives:
#   stock   it must have reproduced the host kernel BUG: the console shows "kernel BUG at
#           mm/memory.c" and "xive_native_esb_fault", and the selftest says "reproduced". Reported
#           as "reproduced", not as a failure; anything else fails the boot.
#   patched the private mapping must have been refused (a closing line with 1 passed, 0 failed, exit
#           status 0) and the console must show no "kernel BUG" at all.
# Returns 1 with the reason in SELFTEST_WHY.
SELFTEST_WHY=
selftest_verdict() { # KIND TXT
  local kind=$1 txt=$2 where
  sed -n '/running xive-selftest$/,/xive-selftest exit status/p' "$txt" | grep -E '^(not )?ok [0-9]+ ' \
    | sed "s/^/$kind: selftest: /" || true
  sed -n "/running $CRASH_CHECK\$/,\$p" "$txt" | grep -E '^(not )?ok [0-9]+ ' | sed "s/^/$kind: crash case: /" || true
  if [ "$kind" = stock ]; then
    # The kernel's own lines ("[   11.05] …", not the selftest's "# kernel log: …" copies of them).
    where=$(grep -m1 -oE '^\[ *[0-9.]+\] kernel BUG at mm/memory.c:[0-9]+' "$txt" | sed 's/^\[[^]]*\] //' || true)
    if [ -n "$where" ] && grep -qE '^\[ *[0-9.]+\] .*xive_native_esb_fault\+0x' "$txt" && grep -q '^# reproduced: ' "$txt" \
       && grep -q "^power9-guest: $CRASH_CHECK exit status 0 " "$txt"; then
      printf 'power9: stock: crash case reproduced: %s in vmf_insert_pfn_prot() from xive_native_esb_fault() (expected on the stock kernel; kernel/series-6.1/0001 fixes it)\n' "$where"
      return 0
    fi
    SELFTEST_WHY="crash case: the host kernel BUG was not reproduced (no 'kernel BUG at mm/memory.c' + 'xive_native_esb_fault' on the console, or no 'reproduced' from the selftest)"
    return 1
  fi
  if grep -q 'kernel BUG at' "$txt"; then
    SELFTEST_WHY="a kernel BUG on the patched kernel: $(grep -m1 'kernel BUG at' "$txt")"
    return 1
  fi
  grep -q "^$CRASH_CHECK: 1 passed, 0 failed" "$txt" && grep -q "^power9-guest: $CRASH_CHECK exit status 0 " "$txt" \
    || { SELFTEST_WHY="crash case: the private ESB mapping was not refused on the patched kernel"; return 1; }
  echo "power9: $kind: crash case: private ESB mapping refused (EINVAL), no kernel BUG"
}

rc=0
for kind in "${BOOTS[@]}"; do boot "$kind" || rc=1; done
echo "power9: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$rc" = 0 ] || { say "FAILED (total $(($(date +%s) - T0))s)"; exit 1; }
say "passed: ${BOOTS[*]} (total $(($(date +%s) - T0))s)"
