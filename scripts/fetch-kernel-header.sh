#!/usr/bin/env bash
# fetch-kernel-header.sh - obtain Linux UAPI headers new enough for
# <linux/vfio.h> with VFIO_DEVICE_FEATURE_DMA_BUF (Linux >= 6.19), without
# installing anything into the system.
#
# How: Debian's `linux-libc-dev` from the unstable (sid) suite is downloaded
# with `apt-get download` using a completely private apt configuration (own
# sources.list, state, lists, cache, empty dpkg status; the system's
# /etc/apt is not read or written), then unpacked with `dpkg-deb -x` into a
# per-version cache directory.
#
# Output: exactly one line on stdout, the include directory, usable as
#     cc -I "$DIR" -I "$DIR/x86_64-linux-gnu" ...
# (linux/*.h live in $DIR, the arch-specific asm/*.h in $DIR/<triplet>/asm).
# Progress and errors go to stderr. Exit status is non-zero on any failure.
#
# Environment:
#   NR_RANGES_CACHE              cache root
#                                (default: ${XDG_CACHE_HOME:-$HOME/.cache}/nr-ranges)
#                                headers end up in
#                                $NR_RANGES_CACHE/linux-libc-dev/<version>/usr/include
#   NR_RANGES_LIBC_DEV_VERSION   exact linux-libc-dev version to use (default:
#                                newest already cached, else newest in the suite)
#   NR_RANGES_REFRESH=1          ignore the "newest cached" shortcut and ask the
#                                mirror for its newest version (same as --refresh)
#   NR_RANGES_DEBIAN_MIRROR      Debian mirror URL (default: the Debian mirror
#                                this machine's apt sources use, else
#                                http://deb.debian.org/debian)
#   NR_RANGES_DEBIAN_SUITE       suite to take the package from (default: sid)
#   NR_RANGES_DEB_ARCH           Debian architecture (default: amd64)
#   NR_RANGES_FETCH_TIMEOUT      seconds allowed per network step (default: 300)
#   NR_RANGES_QUIET=1            no progress messages (errors are still printed)

set -euo pipefail
umask 022
export LC_ALL=C

PROG=fetch-kernel-header
PKG=linux-libc-dev

# Everything that is not the final answer goes to stderr; fd 3 is the real stdout.
exec 3>&1 1>&2

log() { [ "${NR_RANGES_QUIET:-0}" = 1 ] || printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2
}

REFRESH=${NR_RANGES_REFRESH:-0}
for arg in "$@"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        --refresh) REFRESH=1 ;;
        *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

PIN=${NR_RANGES_LIBC_DEV_VERSION:-}
SUITE=${NR_RANGES_DEBIAN_SUITE:-sid}
DEB_ARCH=${NR_RANGES_DEB_ARCH:-amd64}
NET_TIMEOUT=${NR_RANGES_FETCH_TIMEOUT:-300}
case $NET_TIMEOUT in ''|*[!0-9]*) die "NR_RANGES_FETCH_TIMEOUT must be a whole number of seconds, got '$NET_TIMEOUT'" ;; esac

case $DEB_ARCH in
    amd64)   TRIPLET=x86_64-linux-gnu ;;
    arm64)   TRIPLET=aarch64-linux-gnu ;;
    i386)    TRIPLET=i386-linux-gnu ;;
    armhf)   TRIPLET=arm-linux-gnueabihf ;;
    ppc64el) TRIPLET=powerpc64le-linux-gnu ;;
    riscv64) TRIPLET=riscv64-linux-gnu ;;
    s390x)   TRIPLET=s390x-linux-gnu ;;
    loong64) TRIPLET=loongarch64-linux-gnu ;;
    *) die "unsupported NR_RANGES_DEB_ARCH '$DEB_ARCH' (use amd64, arm64, i386, armhf, ppc64el, riscv64, s390x or loong64)" ;;
esac

if [ -n "${NR_RANGES_CACHE:-}" ]; then
    CACHE_BASE=$NR_RANGES_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    CACHE_BASE=$XDG_CACHE_HOME/nr-ranges
elif [ -n "${HOME:-}" ]; then
    CACHE_BASE=$HOME/.cache/nr-ranges
else
    die "neither NR_RANGES_CACHE, XDG_CACHE_HOME nor HOME is set; set NR_RANGES_CACHE to a writable directory"
fi
ROOT=$CACHE_BASE/$PKG
MARKER=.nr-ranges-complete

# Version -> directory name (':' of an epoch is awkward in include paths).
vdir() { printf '%s' "$1" | tr ':/' '__'; }

# Is $1 (an extracted package root) complete and new enough?  On failure the
# reason is left in $WHY.
WHY=
check_tree() {
    local inc=$1/usr/include
    WHY=
    if [ ! -f "$inc/linux/vfio.h" ]; then
        WHY="linux/vfio.h is missing"
    elif ! grep -q 'VFIO_DEVICE_FEATURE_DMA_BUF' "$inc/linux/vfio.h" ||
         ! grep -q 'struct vfio_region_dma_range' "$inc/linux/vfio.h"; then
        WHY="linux/vfio.h lacks VFIO_DEVICE_FEATURE_DMA_BUF / struct vfio_region_dma_range (headers older than Linux 6.19)"
    elif [ ! -e "$inc/$TRIPLET/asm/types.h" ] || [ ! -e "$inc/$TRIPLET/asm/ioctl.h" ]; then
        WHY="$TRIPLET/asm/{types,ioctl}.h are missing"
    elif [ ! -e "$inc/linux/types.h" ] || [ ! -e "$inc/asm-generic/ioctl.h" ]; then
        WHY="linux/types.h or asm-generic/ioctl.h is missing"
    fi
    [ -z "$WHY" ]
}

# Print the include dir of a complete cached version and exit.
emit() {
    log "using $PKG $1 from $ROOT/$(vdir "$1")"
    printf '%s\n' "$ROOT/$(vdir "$1")/usr/include" >&3
    exit 0
}

# Move a broken cache entry out of the way (rename first, so a concurrent
# reader never sees a half-deleted tree with a marker in it).
discard() {
    local junk
    junk=$ROOT/.trash.$$.$RANDOM
    if mv -T -- "$1" "$junk" 2>/dev/null; then rm -rf -- "$junk"; fi
}

# --- warm path: no network --------------------------------------------------
# Sets CACHED_VERSION to the version found in the cache (pinned or newest).
CACHED_VERSION=
try_cache() {
    CACHED_VERSION=
    [ -d "$ROOT" ] || return 1
    local d v best=
    if [ -n "$PIN" ]; then
        d=$ROOT/$(vdir "$PIN")
        [ -f "$d/$MARKER" ] || return 1
        if check_tree "$d"; then CACHED_VERSION=$PIN; return 0; fi
        log "cached $PKG $PIN is unusable ($WHY); fetching it again"
        discard "$d"
        return 1
    fi
    [ "$REFRESH" = 1 ] && return 1
    for d in "$ROOT"/*/; do
        d=${d%/}
        [ -f "$d/$MARKER" ] || continue
        v=$(sed -n 's/^version=//p' "$d/$MARKER" | head -n 1)
        [ -n "$v" ] && [ "$(vdir "$v")" = "${d##*/}" ] || continue
        check_tree "$d" || continue
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best" 2>/dev/null; then
            best=$v
        fi
    done
    [ -n "$best" ] || return 1
    CACHED_VERSION=$best
}

if try_cache; then emit "$CACHED_VERSION"; fi

# --- cold path: fetch with a private apt ------------------------------------
for tool in apt-get apt-cache dpkg-deb dpkg timeout; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found: this script needs Debian's apt/dpkg tools to download $PKG (run it on a Debian/Ubuntu machine, or put an extracted $PKG >= 6.19 tree into $ROOT/<version>/ with a $MARKER file)"
done

mkdir -p -- "$ROOT" 2>/dev/null && [ -w "$ROOT" ] ||
    die "cannot create or write the cache directory '$ROOT'; set NR_RANGES_CACHE to a writable directory"

# Serialise concurrent cold runs (the loser then takes the warm path); if flock
# is unavailable the atomic rename below still keeps the cache consistent.
if command -v flock >/dev/null 2>&1 && { exec 9>>"$ROOT/.lock"; } 2>/dev/null; then
    if ! flock -w "$((NET_TIMEOUT * 2 + 60))" 9; then
        die "timed out waiting for another $PROG run holding $ROOT/.lock; retry, or remove the lock file if no other run is active"
    fi
    if try_cache; then emit "$CACHED_VERSION"; fi
fi

# Leftovers of interrupted runs (older than any run can take).
find "$ROOT" -mindepth 1 -maxdepth 1 \( -name '.staging.*' -o -name '.trash.*' \) \
    -mmin +$(( (NET_TIMEOUT * 2) / 60 + 60 )) -exec rm -rf -- {} + 2>/dev/null || true

# Mirror: same host the system's apt uses (so it is reachable), unless overridden.
detect_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        case $f in
            *.sources)
                awk 'BEGIN { RS = ""; FS = "\n" }
                     {
                       en = 1; uris = ""
                       for (i = 1; i <= NF; i++) {
                         if ($i ~ /^[Ee]nabled:[ \t]*[Nn]o/) en = 0
                         if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u); uris = uris " " u }
                       }
                       if (en) { n = split(uris, a, /[ \t]+/); for (j = 1; j <= n; j++) if (a[j] != "") print a[j] }
                     }' "$f" 2>/dev/null ;;
            *)
                sed -n 's/^[[:space:]]*deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]\{1,\}\).*/\2/p' "$f" 2>/dev/null ;;
        esac
    done | grep -E '^(https?|mirror\+[a-z]+):.*/debian/?$' | head -n 1 || true
}
MIRROR=${NR_RANGES_DEBIAN_MIRROR:-$(detect_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
MIRROR=${MIRROR%/}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nr-ranges-apt.XXXXXX") ||
    die "cannot create a temporary directory under ${TMPDIR:-/tmp}; set TMPDIR to a writable directory"
STAGE=
# shellcheck disable=SC2329  # invoked via trap
cleanup() {
    rm -rf -- "$WORK"
    if [ -n "$STAGE" ] && [ -d "$STAGE" ]; then rm -rf -- "$STAGE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

chmod 755 "$WORK"    # lets apt's unprivileged _apt sandbox user reach it when run as root
mkdir -p "$WORK/etc/apt.conf.d" "$WORK/etc/preferences.d" "$WORK/etc/trusted.gpg.d" \
         "$WORK/state/lists/partial" "$WORK/cache/archives/partial" "$WORK/log" "$WORK/dl"
: > "$WORK/state/status"
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
    chown _apt "$WORK/dl" 2>/dev/null || true
fi

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -r "$KEYRING" ]; then
    SRC_OPTS="signed-by=$KEYRING"
else
    log "warning: $KEYRING not found (package debian-archive-keyring); the $SUITE index will not be signature-checked"
    SRC_OPTS="trusted=yes"
fi
printf 'deb [%s arch=%s] %s %s main\n' "$SRC_OPTS" "$DEB_ARCH" "$MIRROR" "$SUITE" > "$WORK/sources.list"

# Read first via APT_CONFIG; points apt away from every system config/state file.
cat > "$WORK/apt.conf" <<EOF
Dir::Etc "$WORK/etc";
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$WORK/etc/apt.conf.d";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$WORK/etc/preferences.d";
Dir::Etc::trusted "/dev/null";
Dir::Etc::trustedparts "$WORK/etc/trusted.gpg.d";
Dir::Etc::sourcelist "$WORK/sources.list";
Dir::Etc::sourceparts "-";
Dir::State "$WORK/state";
Dir::State::Lists "$WORK/state/lists";
Dir::State::status "$WORK/state/status";
Dir::State::extended_states "$WORK/state/extended_states";
Dir::Cache "$WORK/cache";
Dir::Cache::archives "$WORK/cache/archives";
Dir::Cache::pkgcache "$WORK/cache/pkgcache.bin";
Dir::Cache::srcpkgcache "$WORK/cache/srcpkgcache.bin";
Dir::Log "$WORK/log";
APT::Architecture "$DEB_ARCH";
APT::Architectures { "$DEB_ARCH"; };
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
Acquire::PDiffs "false";
Acquire::Retries "2";
Acquire::http::Timeout "30";
Acquire::https::Timeout "30";
APT::Update::Error-Mode "any";
EOF
export APT_CONFIG="$WORK/apt.conf"
APT_LOG=$WORK/apt.log

# First apt error line(s) of the last step, for the one-line error message.
apt_reason() {
    local r
    r=$(grep -E '^(E|W|Err):' "$APT_LOG" 2>/dev/null | grep -v 'unsandboxed' | head -n 2 | tr '\n' ' ' | sed 's/[[:space:]]*$//')
    [ -n "$r" ] || r=$(tail -n 1 "$APT_LOG" 2>/dev/null || true)
    printf '%s' "${r:-no output}"
}

MIRROR_HOST=${MIRROR#*://}; MIRROR_HOST=${MIRROR_HOST%%/*}
log "fetching the $SUITE package index from $MIRROR (private apt config, nothing is installed)"
rc=0
timeout -k 10 "$NET_TIMEOUT" apt-get -q -y update > "$APT_LOG" 2>&1 || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    die "apt-get update of '$SUITE' from $MIRROR timed out after ${NET_TIMEOUT}s; check network access to $MIRROR_HOST (or set NR_RANGES_DEBIAN_MIRROR to a reachable Debian mirror / raise NR_RANGES_FETCH_TIMEOUT)"
elif [ "$rc" != 0 ]; then
    if grep -q 'does not have a Release file' "$APT_LOG" 2>/dev/null; then
        die "apt-get update failed: $MIRROR has no suite '$SUITE' ($(apt_reason)) -- check NR_RANGES_DEBIAN_SUITE / NR_RANGES_DEBIAN_MIRROR"
    fi
    die "apt-get update of '$SUITE' from $MIRROR failed (exit $rc): $(apt_reason) -- check network access to $MIRROR_HOST, or set NR_RANGES_DEBIAN_MIRROR to a reachable Debian mirror"
fi

POLICY=$(timeout 120 apt-cache policy "$PKG" 2>>"$APT_LOG") || POLICY=
CANDIDATE=$(printf '%s\n' "$POLICY" | sed -n 's/^[[:space:]]*Candidate:[[:space:]]*//p' | head -n 1)
if [ -z "$CANDIDATE" ] || [ "$CANDIDATE" = "(none)" ]; then
    die "package $PKG ($DEB_ARCH) not found in '$SUITE' main at $MIRROR; check NR_RANGES_DEBIAN_SUITE / NR_RANGES_DEBIAN_MIRROR"
fi

if [ -n "$PIN" ]; then
    # (`apt-cache show pkg=ver` exits 0 even for unknown versions; use madison.)
    AVAILABLE=$(timeout 120 apt-cache madison "$PKG" 2>>"$APT_LOG" |
                awk -F'|' '{ gsub(/[ \t]/, "", $2); if ($2 != "") print $2 }' | sort -u | tr '\n' ' ')
    case " $AVAILABLE " in
        *" $PIN "*) ;;
        *) die "$PKG version '$PIN' (NR_RANGES_LIBC_DEV_VERSION) is not available in '$SUITE' at $MIRROR (available: ${AVAILABLE% }); unset NR_RANGES_LIBC_DEV_VERSION or pin an available version" ;;
    esac
    VERSION=$PIN
else
    VERSION=$CANDIDATE
fi
case $VERSION in
    *[!A-Za-z0-9.+~:-]*) die "refusing unexpected $PKG version string '$VERSION'" ;;
esac

FINAL=$ROOT/$(vdir "$VERSION")
if [ -f "$FINAL/$MARKER" ]; then
    if check_tree "$FINAL"; then emit "$VERSION"; fi
    discard "$FINAL"
fi

log "downloading $PKG $VERSION"
rc=0
( cd "$WORK/dl" && exec timeout -k 10 "$NET_TIMEOUT" apt-get -q -y download "$PKG=$VERSION" ) > "$APT_LOG" 2>&1 || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    die "downloading $PKG $VERSION from $MIRROR timed out after ${NET_TIMEOUT}s; check network access to $MIRROR_HOST (or raise NR_RANGES_FETCH_TIMEOUT)"
elif [ "$rc" != 0 ]; then
    die "apt-get download $PKG=$VERSION from $MIRROR failed (exit $rc): $(apt_reason) -- check network access to $MIRROR_HOST and retry"
fi
set -- "$WORK"/dl/*.deb
[ "$#" = 1 ] && [ -f "$1" ] ||
    die "apt-get download $PKG=$VERSION reported success but left no single .deb in $WORK/dl; retry, or report this"
DEB=$1
DEB_SIZE=$(wc -c < "$DEB" | tr -d ' ')
DEB_SHA256=$(sha256sum "$DEB" 2>/dev/null | cut -d' ' -f1 || true)
log "downloaded ${DEB##*/} ($DEB_SIZE bytes)"

STAGE=$(mktemp -d "$ROOT/.staging.$(vdir "$VERSION").XXXXXX") ||
    die "cannot create a staging directory in '$ROOT'; check that it is writable (or set NR_RANGES_CACHE)"
if ! dpkg-deb -x "$DEB" "$STAGE" 2>"$APT_LOG"; then
    die "dpkg-deb -x ${DEB##*/} failed: $(tail -n 1 "$APT_LOG") -- check free space in '$ROOT' and retry"
fi
if ! check_tree "$STAGE"; then
    die "$PKG $VERSION from '$SUITE' is not usable: $WHY; Linux >= 6.19 headers are required -- unset NR_RANGES_LIBC_DEV_VERSION, or try NR_RANGES_DEBIAN_SUITE=experimental"
fi
{
    printf 'version=%s\n' "$VERSION"
    printf 'package=%s\n' "$PKG"
    printf 'file=%s\n' "${DEB##*/}"
    printf 'size=%s\n' "$DEB_SIZE"
    printf 'sha256=%s\n' "$DEB_SHA256"
    printf 'source=%s %s main %s\n' "$MIRROR" "$SUITE" "$DEB_ARCH"
    printf 'fetched=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/$MARKER"
chmod 755 "$STAGE"

# Publish atomically: rename(2) either installs the complete tree or fails
# because a concurrent run already installed it.
if mv -T -- "$STAGE" "$FINAL" 2>/dev/null; then
    STAGE=
elif [ -f "$FINAL/$MARKER" ] && check_tree "$FINAL"; then
    log "another run installed $PKG $VERSION concurrently; using it"
else
    discard "$FINAL"
    mv -T -- "$STAGE" "$FINAL" 2>/dev/null ||
        die "could not move the extracted headers into '$FINAL'; check permissions of '$ROOT' and retry"
    STAGE=
fi
emit "$VERSION"
