#!/usr/bin/env bash
# Build a SIF image from an Apptainer definition file on a machine without Apptainer, following the file
# section by section the way `apptainer build` does. Run it from the build context (the repository root:
# the %files sources are relative to it):
#
#   scripts/build-sif.sh [--force] [--notest] IMAGE.sif DEFINITION.def
#   scripts/build-sif.sh hyrax.sif containers/hyrax.def         # what `make sif` runs without Apptainer
#
# What it does, in apptainer's order (the definition file is the only source of the image's content):
#   base      `Bootstrap: docker` + `From: python:3.X-slim-<suite>` is stood in for by a Debian <suite> root
#             from debootstrap (minbase, python3, python3-venv, ca-certificates), whose python3 must be 3.X;
#             cached in $HYRAX_SIF_CACHE/base-<suite>/
#   %files    copied into the root (`cp -fLr SRC DEST`, SRC relative to the current directory)
#   %post     run inside the root (chroot in a private mount namespace, with /proc, /dev, a tmpfs /tmp
#             and the host's resolv.conf), as `/bin/sh -e -x`, with APPTAINER_ROOTFS and
#             APPTAINER_ENVIRONMENT set; pip gets the host's CA bundle and find-links folders (its `cert`
#             and `find-links` settings or PIP_CERT/PIP_FIND_LINKS), which is where this machine keeps
#             the CPU torch wheel
#   %environment, %runscript, %test, %help, %labels  -> /.singularity.d/{env/90-environment.sh,
#             runscript, test, runscript.help, labels.json}, the definition as /.singularity.d/Singularity,
#             and the link /singularity
#   %apprun, %apphelp, %appenv NAME  -> /scif/apps/NAME/scif/{runscript, runscript.help, env/90-environment.sh}
#   pack      mksquashfs (gzip, all files owned by root) and siftool: a SIF with the definition (Def.FILE)
#             and the squashfs root as its primary partition, launch line `#!/usr/bin/env run-singularity`
#   %test     run in the finished image through scripts/run-sif.sh (read-only root); --notest skips it
# Any other section (%setup, %startscript, %appinstall, ...) is refused by name rather than ignored.
#
# The build is skipped when the image exists and its inputs (the definition, the %files sources and this
# script) have not changed since it was built; otherwise it names the inputs that changed. --force builds
# anyway; --check only says whether the image is up to date (exit 0) or not (exit 1, naming the changes). It prints the time of each step, the
# total build time and the image size. Work files are in $HYRAX_SIF_CACHE (default .sif-cache/ in the
# build context); the image replaces IMAGE.sif only once %test passed.
#
# Needs root and Debian's debootstrap, squashfs-tools and siftool (plus util-linux's unshare and mount).
# Exit codes: 0 built or up to date; 2 usage; 3 a build tool is missing; 4 not root; 1 the build failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
force=0 notest=0 check=0
while [ $# -gt 0 ]; do
    case $1 in
        --force|-F) force=1; shift ;;
        --check) check=1; shift ;;
        --notest|-T) notest=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-sif: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -ne 2 ]; then
    echo "usage: $0 [--force] [--notest] [--check] IMAGE.sif DEFINITION.def" >&2
    exit 2
fi
OUT=$(realpath -m "$1")
DEF_SRC=$(realpath "$2")
CTX=$PWD
CACHE=$(realpath -m "${HYRAX_SIF_CACHE:-$CTX/.sif-cache}")
MIRROR=${HYRAX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,ca-certificates

say() { printf 'build-sif: %s\n' "$*" >&2; }
trap 'say "failed (line $LINENO: $BASH_COMMAND)"' ERR
die() { say "$*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- the definition file ----------------------------------------------------------------------------
# A section starts at a line `%name` or `%name ARG` (apps); its body runs to the next such line.
SECTION_LINE='^%[A-Za-z]+([ \t]+[^ \t]+)?[ \t]*$'
section_keys() { awk -v re="$SECTION_LINE" '$0 ~ re { k = substr($1, 2); if (NF > 1) k = k " " $2; print k }' "$DEF"; }
section() {  # section "post" | section "apprun infer": the body as written
    awk -v re="$SECTION_LINE" -v want="$1" '
        $0 ~ re { k = substr($1, 2); if (NF > 1) k = k " " $2; on = (k == want); next }
        on { print }' "$DEF"
}
header() { awk -v re="$SECTION_LINE" -v key="$1" '$0 ~ re { exit } $1 == key ":" { print $2; exit }' "$DEF"; }

[ -f "$DEF_SRC" ] || die "no definition file $2"
# one snapshot of the definition for the whole build (it may be regenerated meanwhile)
DEF=$(mktemp "${TMPDIR:-/tmp}/build-sif.XXXXXX.def")
trap 'rm -f "$DEF"' EXIT
cp "$DEF_SRC" "$DEF"
bootstrap=$(header Bootstrap) from=$(header From)
[ "$bootstrap" = docker ] || die "Bootstrap: $bootstrap: only 'docker' (python:3.X-slim-<suite>) is handled; build with apptainer"
[[ $from =~ ^(docker\.io/(library/)?)?python:(3\.[0-9]+)(\.[0-9]+)?-slim-([a-z]+)$ ]] \
    || die "From: $from: only python:3.X-slim-<debian suite> bases are handled; build with apptainer"
want_python=${BASH_REMATCH[3]} suite=${BASH_REMATCH[5]}
keys=$(section_keys)
while read -r key; do
    case ${key%% *} in
        help|labels|files|environment|post|runscript|test|apprun|apphelp|appenv) ;;
        *) die "%$key: this section is not handled by build-sif.sh; build with apptainer" ;;
    esac
done <<<"$keys"
apps=$(awk '$1 == "apprun" { print $2 }' <<<"$keys")

# --- tools ------------------------------------------------------------------------------------------
missing=()
for tool in debootstrap mksquashfs siftool unshare mount chroot; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "missing: ${missing[*]} (apt-get install debootstrap squashfs-tools siftool)"
    exit 3
fi
if [ "$(id -u)" != 0 ]; then
    say "building needs root (debootstrap, chroot and mounts)"
    exit 4
fi

# --- skip when nothing changed ----------------------------------------------------------------------
files_sources() { section files | awk 'NF && $1 !~ /^#/ { print $1 }'; }
inputs() {  # one "sha256  name" line per input: the definition, this script, the base, each %files file
    printf '%s  %s\n' "$(sha256sum <"$DEF" | cut -c1-64)" "$(realpath --relative-to="$CTX" "$DEF_SRC")"
    printf '%s  %s\n' "$(sha256sum <"$0" | cut -c1-64)" "(build-sif.sh)"
    printf '%s  %s\n' "$(printf '%s' "$suite $BASE_PACKAGES $MIRROR" | sha256sum | cut -c1-64)" "(base $suite)"
    while read -r src; do
        (cd "$CTX" && find -L "$src" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
            | LC_ALL=C sort -z | xargs -0r sha256sum)
    done < <(files_sources)
}
while read -r src; do
    [ -e "$CTX/$src" ] || die "%files: $src does not exist in $CTX (run from the build context, the repository root)"
done < <(files_sources)
manifest=$(inputs)
key=$(sha256sum <<<"$manifest" | cut -c1-64)
stamp_of() { printf '%s %s %s\n' "$key" "$(stat -c '%s %Y' "$OUT")" "$OUT"; }
stamp=$CACHE/stamps/$(printf '%s' "$OUT" | sha256sum | cut -c1-16)
up_to_date() { [ -f "$OUT" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(stamp_of)" ]; }
changed() {  # the inputs that differ from the last build's (from its manifest), at most 10 named
    if [ ! -f "$OUT" ] || [ ! -f "$stamp.inputs" ]; then echo "(no earlier build of $OUT)"; return; fi
    local names
    names=$(LC_ALL=C comm -3 <(LC_ALL=C sort "$stamp.inputs") <(LC_ALL=C sort <<<"$manifest") | awk '{ $1 = ""; print substr($0, 2) }' | sort -u)
    if [ -z "$names" ]; then echo "(the image changed since it was built)"; return; fi
    printf '%s\n' "$names" | head -n 10 | tr '\n' ' '
    [ "$(wc -l <<<"$names")" -le 10 ] || printf '... (%d in all)' "$(wc -l <<<"$names")"
    echo
}
if [ "$force" = 0 ] && up_to_date; then
    say "$OUT is up to date (inputs unchanged, key ${key:0:12}); --force rebuilds"
    exit 0
fi
if [ "$check" = 1 ]; then
    say "$OUT is out of date; changed since it was built: $(changed)"
    exit 1
fi
[ "$force" = 1 ] || say "changed since the last build: $(changed)"

t0=$(now)
mkdir -p "$CACHE/stamps" "$(dirname "$OUT")"
# one build of an image at a time (two pytest workers, two `make sif`): the second finds it up to date
exec 9>"$stamp.lock"
flock 9
if [ "$force" = 0 ] && up_to_date; then
    say "$OUT is up to date (built meanwhile by another build-sif.sh)"
    exit 0
fi
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
cleanup() { rm -rf "$WORK" "$DEF"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ROOT=$WORK/root
say "building $OUT from $DEF_SRC (inputs key ${key:0:12}); work in $WORK"

# --- base: debootstrap, cached ----------------------------------------------------------------------
BASE=$CACHE/base-$suite
if [ ! -x "$BASE/usr/bin/python3" ]; then
    t=$(now)
    say "base: debootstrap $suite ($BASE_PACKAGES) from $MIRROR"
    rm -rf "$BASE" "$BASE.partial"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$suite" "$BASE.partial" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    chroot "$BASE.partial" apt-get clean
    rm -rf "$BASE.partial"/var/lib/apt/lists/* "$BASE.partial"/var/log/* "$BASE.partial"/var/cache/apt/*.bin
    find "$BASE.partial/dev" "$BASE.partial/tmp" "$BASE.partial/run" -mindepth 1 -delete
    mv "$BASE.partial" "$BASE"
    say "base: $(since "$t") s"
else
    say "base: cached $BASE"
fi
have_python=$(chroot "$BASE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$have_python" = "$want_python" ] || die "From: $from wants Python $want_python; Debian $suite has $have_python"
cp -a "$BASE" "$ROOT"

# --- %files -----------------------------------------------------------------------------------------
while read -r src dest _; do
    if [ -z "$src" ] || [ "${src#\#}" != "$src" ]; then continue; fi
    dest=${dest:-$src}
    mkdir -p "$ROOT$(dirname "$dest")"
    (cd "$CTX" && cp -fLr "$src" "$ROOT$dest")
done < <(section files)

# --- %post ------------------------------------------------------------------------------------------
# pip inside the root: the host's CA bundle and local find-links folders (bound read-only under the
# build's own /tmp, a tmpfs that leaves nothing in the image)
pip_setting() {  # the host pip's value for a setting (cert, find-links), from the environment or `pip config`
    local env=$1 name=$2 pip
    if [ -n "${!env:-}" ]; then printf '%s\n' "${!env}"; return; fi
    for pip in "python3 -m pip" pip3 pip; do
        $pip --version >/dev/null 2>&1 || continue
        $pip config list 2>/dev/null | awk -F= -v k="$name" '$1 ~ "[.]" k "$" { v = substr($0, index($0, "=") + 1) } END { print v }' \
            | tr -d "'\""
        return
    done
}
cert=$(pip_setting PIP_CERT cert)
links=$(pip_setting PIP_FIND_LINKS find-links)
{
    echo 'set -eu'
    echo "mount -t proc proc '$ROOT/proc' && mount --rbind /dev '$ROOT/dev' && mount -t tmpfs tmpfs '$ROOT/tmp'"
    echo "mkdir -p '$ROOT/tmp/hyrax-build'"
    for f in /etc/resolv.conf /etc/hosts; do
        if [ -f "$f" ]; then echo "[ -e '$ROOT$f' ] || touch '$ROOT$f'; mount --bind -o ro '$f' '$ROOT$f'"; fi
    done
} >"$WORK/mounts.sh"
pip_env=()
if [ -n "$cert" ] && [ -f "$cert" ]; then
    echo "cp '$cert' '$ROOT/tmp/hyrax-build/ca.crt'" >>"$WORK/mounts.sh"
    pip_env+=(PIP_CERT=/tmp/hyrax-build/ca.crt)
fi
inner_links=() i=0
for l in $links; do
    l=${l#file://}
    if [ -d "$l" ]; then
        i=$((i + 1))
        echo "mkdir '$ROOT/tmp/hyrax-build/links$i' && mount --bind -o ro '$l' '$ROOT/tmp/hyrax-build/links$i'" >>"$WORK/mounts.sh"
        inner_links+=("/tmp/hyrax-build/links$i")
    elif [[ $l == http*://* ]]; then
        inner_links+=("$l")
    fi
done
if [ ${#inner_links[@]} -gt 0 ]; then pip_env+=("PIP_FIND_LINKS=${inner_links[*]}"); fi
# an index the %post names that does not resolve here (no network to it): pip would retry it for every
# package it looks up (several seconds each); tell pip not to retry
for host in $(section post | grep -oE 'https?://[^/ ]+' | sed 's|.*://||' | sort -u); do
    if ! getent hosts "$host" >/dev/null 2>&1; then
        say "%post: $host does not resolve here; pip will not retry it (packages come from the other indexes and find-links)"
        pip_env+=(PIP_RETRIES=0)
    fi
done
section post >"$WORK/post.sh"
echo "cp '$WORK/post.sh' '$ROOT/tmp/hyrax-build/post.sh'" >>"$WORK/mounts.sh"
mkdir -p "$ROOT/.singularity.d/env"
t=$(now)
say "%post: running inside the root (log: $WORK/post.log, kept on failure as $CACHE/post.log)"
post_env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
          DEBIAN_FRONTEND=noninteractive APPTAINER_ROOTFS=/ SINGULARITY_ROOTFS=/
          APPTAINER_ENVIRONMENT=/.singularity.d/env/91-environment.sh
          SINGULARITY_ENVIRONMENT=/.singularity.d/env/91-environment.sh "${pip_env[@]}")
if ! unshare -m --propagation private bash -c '. "$1/mounts.sh" && shift && exec chroot "$@"' \
        sh "$WORK" "$ROOT" /usr/bin/env -i "${post_env[@]}" /bin/sh -e -x /tmp/hyrax-build/post.sh \
        >"$WORK/post.log" 2>&1; then
    cp "$WORK/post.log" "$CACHE/post.log"
    tail -n 30 "$WORK/post.log" >&2
    die "%post failed (whole log: $CACHE/post.log)"
fi
t_post=$(since "$t")
say "%post: $t_post s"
find "$ROOT/dev" "$ROOT/tmp" "$ROOT/proc" -mindepth 1 -delete 2>/dev/null || true

# --- the runtime files apptainer writes -------------------------------------------------------------
SD=$ROOT/.singularity.d
script() {  # script PATH BODY: an executable /bin/sh script, as apptainer writes them
    mkdir -p "$(dirname "$1")"
    printf '#!/bin/sh\n\n%s\n' "$2" >"$1"
    chmod 755 "$1"
}
mkdir -p "$SD/env" "$SD/libs" "$ROOT/scif/apps" "$ROOT/scif/data"
script "$SD/env/01-base.sh" '# the container default PATH is set by the runtime'
script "$SD/env/90-environment.sh" "# Custom environment shell code should follow
$(section environment)"
# %post may append to $APPTAINER_ENVIRONMENT; apps: their own environment, bin and lib (SCIF)
script "$SD/env/95-apps.sh" '# the environment of the app being run (run --app NAME sets SCIF_APPNAME)
if [ -n "${SCIF_APPNAME:-}" ] && [ -d "/scif/apps/$SCIF_APPNAME" ]; then
    SCIF_APPROOT=/scif/apps/$SCIF_APPNAME SCIF_APPDATA=/scif/data/$SCIF_APPNAME
    SCIF_APPRUN=$SCIF_APPROOT/scif/runscript SCIF_APPMETA=$SCIF_APPROOT/scif
    export SCIF_APPROOT SCIF_APPDATA SCIF_APPRUN SCIF_APPMETA
    PATH=$SCIF_APPROOT/bin:$PATH LD_LIBRARY_PATH=$SCIF_APPROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export PATH LD_LIBRARY_PATH
    for _f in "$SCIF_APPMETA"/env/*.sh; do [ -f "$_f" ] && . "$_f"; done
    unset _f
fi'
script "$SD/runscript" "$(section runscript)"
keys_has() { grep -qx "$1" <<<"$keys"; }
if keys_has test; then script "$SD/test" "$(section test)"; fi
if keys_has help; then section help >"$SD/runscript.help"; fi
cp "$DEF" "$SD/Singularity"
ln -sfn .singularity.d/runscript "$ROOT/singularity"
json() { local s=$1; s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/\\t}; printf '"%s"' "$s"; }
{
    printf '{\n'
    while read -r k v; do
        if [ -n "$k" ] && [ "${k#\#}" = "$k" ]; then printf '    %s: %s,\n' "$(json "$k")" "$(json "$v")"; fi
    done < <(section labels)
    printf '    "org.label-schema.build-arch": "amd64",\n'
    printf '    "org.label-schema.build-date": %s,\n' "$(json "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf '    "org.label-schema.schema-version": "1.0",\n'
    printf '    "org.label-schema.usage": "/.singularity.d/runscript.help",\n'
    printf '    "org.label-schema.usage.singularity.deffile.bootstrap": %s,\n' "$(json "$bootstrap")"
    printf '    "org.label-schema.usage.singularity.deffile.from": %s,\n' "$(json "$from")"
    printf '    "build-sif": "scripts/build-sif.sh: debootstrap %s, python %s"\n' "$suite" "$have_python"
    printf '}\n'
} >"$SD/labels.json"
for app in $apps; do
    A=$ROOT/scif/apps/$app
    mkdir -p "$A/bin" "$A/lib" "$A/scif/env" "$ROOT/scif/data/$app/input" "$ROOT/scif/data/$app/output"
    script "$A/scif/runscript" "$(section "apprun $app")"
    if keys_has "apphelp $app"; then section "apphelp $app" >"$A/scif/runscript.help"; fi
    if keys_has "appenv $app"; then script "$A/scif/env/90-environment.sh" "$(section "appenv $app")"; fi
done

# --- pack: squashfs partition + SIF -----------------------------------------------------------------
t=$(now)
say "mksquashfs: $(du -sm "$ROOT" | cut -f1) MB root"
mksquashfs "$ROOT" "$WORK/root.squashfs" -noappend -comp gzip -all-root -no-progress >"$WORK/mksquashfs.log" 2>&1 \
    || { tail -n 20 "$WORK/mksquashfs.log" >&2; die "mksquashfs failed"; }
t_squash=$(since "$t")
say "mksquashfs: $t_squash s"
rm -rf "$ROOT"
TMP_SIF=$WORK/image.sif
siftool new "$TMP_SIF"
siftool add --groupid 1 --datatype 1 --filename "$(basename "$DEF_SRC")" "$TMP_SIF" "$DEF"
siftool add --groupid 1 --datatype 4 --parttype 2 --partfs 1 --partarch 2 "$TMP_SIF" "$WORK/root.squashfs"
printf '#!/usr/bin/env run-singularity\n' | dd of="$TMP_SIF" conv=notrunc status=none
chmod 755 "$TMP_SIF"
rm -f "$WORK/root.squashfs"

# --- %test, in the finished image -------------------------------------------------------------------
if keys_has test && [ "$notest" = 0 ]; then
    t=$(now)
    say "%test: in the image (read-only root)"
    "$here/run-sif.sh" test --cleanenv "$TMP_SIF" >&2 || die "%test failed"
    say "%test: $(since "$t") s"
fi

mv -f "$TMP_SIF" "$OUT"
stamp_of >"$stamp"
printf '%s\n' "$manifest" >"$stamp.inputs"
size_mb=$(( $(stat -c %s "$OUT") / 1000000 ))
siftool list "$OUT" >&2
say "built $OUT: $size_mb MB in $(since "$t0") s (%post $t_post s, mksquashfs $t_squash s)"
