#!/usr/bin/env bash
# Run a SIF image the way `apptainer` does, on a machine without Apptainer (CI, this repository's tests).
# Link it as `apptainer` on PATH and the Slurm recipes in apptainer/ run through it unchanged.
#
#   scripts/run-sif.sh [run] [OPTIONS] IMAGE [ARGS]      the runscript (%runscript), like `apptainer run`
#   scripts/run-sif.sh run --app NAME IMAGE [ARGS]       an app's runscript (%apprun NAME)
#   scripts/run-sif.sh exec [OPTIONS] IMAGE COMMAND [ARGS]
#   scripts/run-sif.sh test [OPTIONS] IMAGE               the image's %test
#   scripts/run-sif.sh run-help [--app NAME] IMAGE       %help (%apphelp NAME)
#   scripts/run-sif.sh inspect [--list-apps|--labels|--runscript|--test|--deffile|--helpfile|--environment]
#                              [--app NAME] IMAGE
# OPTIONS (before IMAGE, as for apptainer):
#   -B, --bind SRC[:DEST[:ro|rw]][,...]   bind more host paths (repeatable)
#   --app NAME        run an app      -e, --cleanenv   don't pass the host environment
#   --no-home         don't bind $HOME                 --pwd DIR        working directory inside
#   --net --network none                 no network (a new network namespace with only loopback)
#
# As apptainer run does: the root is the image's squashfs partition, mounted read-only (loop mount at
# its offset in the SIF; an overlay on a tmpfs only holds the mount points of the binds, and is itself
# mounted read-only); the current directory, $HOME, /tmp and /var/tmp are bound writable, /proc, /sys
# and /dev and the host's /etc/hosts, /etc/resolv.conf and /etc/localtime too; the host environment passes
# through except PATH and LD_LIBRARY_PATH (APPTAINERENV_X=v sets X=v inside); the image's
# /.singularity.d/env/*.sh are sourced and then the runscript is exec'd. Everything runs in a private
# mount namespace (unshare), so the mounts vanish with the process, and the chain of execs keeps one
# process: signals (Slurm's SIGTERM, Ctrl-C) reach the stage itself, and its exit code is returned.
#
# Needs root (mount namespaces and loop mounts) and util-linux, squashfs-tools and siftool.
# Exit codes: the command's own; 255 for run-sif.sh's own errors (like apptainer).
set -euo pipefail

die() { printf 'run-sif: %s\n' "$*" >&2; exit 255; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# --- arguments --------------------------------------------------------------------------------------
argv=("$@")
cmd=run
case ${1:-} in
    run|exec|test|inspect|run-help) cmd=$1; shift ;;
    -h|--help|help) usage; exit 0 ;;
    version|--version) echo "run-sif (hyrax scripts/run-sif.sh, apptainer-compatible subset)"; exit 0 ;;
esac
app="" cleanenv=0 home=1 network="" pwd_in="" what=""
binds=()
while [ $# -gt 0 ]; do
    case $1 in
        --app) app=${2:?--app needs a name}; shift 2 ;;
        --app=*) app=${1#*=}; shift ;;
        -B|--bind|--mount) binds+=("${2:?$1 needs SRC[:DEST]}"); shift 2 ;;
        --bind=*) binds+=("${1#*=}"); shift ;;
        -e|--cleanenv) cleanenv=1; shift ;;
        --no-home) home=0; shift ;;
        --pwd) pwd_in=$2; shift 2 ;;
        --pwd=*) pwd_in=${1#*=}; shift ;;
        --net) network=${network:-default}; shift ;;
        --network) network=$2; shift 2 ;;
        --network=*) network=${1#*=}; shift ;;
        --list-apps|--labels|--runscript|--test|--deffile|--helpfile|--environment) what=$1; shift ;;
        --nv|--nvccli|--rocm)
            die "$1: GPUs need the real Apptainer (it binds the host's driver); run-sif.sh runs CPU images only" ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (scripts/run-sif.sh --help lists what is supported)" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || die "no image given (scripts/run-sif.sh --help)"
IMAGE=$(realpath -e "$1" 2>/dev/null) || die "no image $1"
shift
[ "$cmd" = exec ] && [ $# -eq 0 ] && die "exec: no command given"
case $network in
    ""|default) network="" ;;
    none) ;;
    *) die "--network $network: only 'none' is supported" ;;
esac

# --- the squashfs partition of the SIF --------------------------------------------------------------
command -v siftool >/dev/null || die "siftool is not installed (apt-get install siftool)"
span=$(siftool list "$IMAGE" 2>/dev/null | awk -F'|' '$5 ~ /Squashfs\/\*System/ { gsub(/ /, "", $4); print $4; exit }' || true)
[ -n "$span" ] || die "$IMAGE: no primary squashfs partition (is it a SIF? siftool list $IMAGE)"
OFFSET=${span%-*} SIZE=$(( ${span#*-} - ${span%-*} ))

in_image() {  # cat a file of the image, without mounting it
    unsquashfs -o "$OFFSET" -cat "$IMAGE" "$1" 2>/dev/null
}
list_apps() {
    { unsquashfs -o "$OFFSET" -l -d / "$IMAGE" /scif/apps 2>/dev/null || true; } \
        | sed -n 's|^/*scif/apps/\([^/]*\)$|\1|p'
}
app_dir=""
if [ -n "$app" ]; then
    app_dir=/scif/apps/$app
    if ! in_image "$app_dir/scif/runscript" >/dev/null; then
        apps=$(list_apps | tr '\n' ' ')
        die "no app '$app' in $IMAGE (apps: ${apps:-none})"
    fi
fi

case $cmd in
    inspect)
        case ${what:---labels} in
            --list-apps) list_apps ;;
            --labels) in_image /.singularity.d/labels.json ;;
            --runscript) in_image "${app_dir:-/.singularity.d}${app:+/scif}/runscript" ;;
            --helpfile) in_image "${app_dir:-/.singularity.d}${app:+/scif}/runscript.help" ;;
            --test) in_image /.singularity.d/test ;;
            --deffile) in_image /.singularity.d/Singularity ;;
            --environment) in_image /.singularity.d/env/90-environment.sh ;;
        esac
        exit $? ;;
    run-help)
        in_image "${app_dir:-/.singularity.d}${app:+/scif}/runscript.help" || echo "No help sections were defined for this image"
        exit 0 ;;
esac

[ "$(id -u)" = 0 ] || die "run-sif.sh needs root (mount namespace, loop mount); Apptainer itself does not"

# --- a private mount namespace (and network namespace with --network none) --------------------------
# unshare without --fork execs this script again, with the same arguments, as the same process
if [ -z "${_RUN_SIF_NS:-}" ]; then
    ns=(-m --propagation private)
    [ "$network" = none ] && ns+=(-n)
    _RUN_SIF_NS=1 exec unshare "${ns[@]}" -- "$0" "${argv[@]}"
fi
unset _RUN_SIF_NS
if [ "$network" = none ] && command -v ip >/dev/null; then ip link set lo up 2>/dev/null || true; fi

# --- the root: the squashfs partition, read-only, with mount points for the binds ------------------
W=/run/run-sif
mkdir -p "$W"
mount -t tmpfs -o mode=0700 run-sif "$W"  # private to this namespace: gone with the process
mkdir "$W/image" "$W/upper" "$W/work" "$W/root"
mount -t squashfs -o loop,ro,offset="$OFFSET",sizelimit="$SIZE" "$IMAGE" "$W/image" \
    || die "cannot loop-mount the squashfs partition of $IMAGE (no loop devices?)"
# the overlay's upper layer (tmpfs) only receives the mount points made below; the image is untouched
mount -t overlay overlay -o "lowerdir=$W/image,upperdir=$W/upper,workdir=$W/work" "$W/root"
R=$W/root

# binds: SRC DEST MODE; defaults first, then --bind (a later one for the same DEST wins)
bind_list=()
add_bind() { bind_list+=("$1"$'\t'"$(realpath -m -s "$2")"$'\t'"$3"); }  # add_bind SRC DEST MODE
for f in /etc/hosts /etc/resolv.conf /etc/localtime; do
    if [ -e "$f" ]; then add_bind "$(realpath "$f")" "$f" ro; fi
done
add_bind /tmp /tmp rw
add_bind /var/tmp /var/tmp rw
if [ "$home" = 1 ] && [ -n "${HOME:-}" ] && [ -d "$HOME" ] && [ "$(realpath "$HOME")" != / ]; then
    add_bind "$(realpath "$HOME")" "$HOME" rw
fi
here=$(pwd -P)
case $here in
    /|/bin|/bin/*|/boot|/boot/*|/dev|/dev/*|/etc|/etc/*|/lib*|/proc|/proc/*|/sbin|/sbin/*|/sys|/sys/*|/usr|/usr/*) ;;
    *) add_bind "$here" "$here" rw ;;
esac
for spec in ${binds[@]+"${binds[@]}"}; do
    IFS=, read -r -a parts <<<"$spec"
    for part in "${parts[@]}"; do
        IFS=: read -r src dest mode <<<"$part"
        [ -e "$src" ] || die "--bind $part: $src does not exist"
        case ${mode:-rw} in ro|rw) ;; *) die "--bind $part: mode must be ro or rw" ;; esac
        add_bind "$(realpath "$src")" "${dest:-$(realpath "$src")}" "${mode:-rw}"
    done
done
# each DEST resolved inside the image (its symlinks stay inside it); mounted shortest path first
declare -A bind_at=()
for b in "${bind_list[@]}"; do
    IFS=$'\t' read -r src dest mode <<<"$b"
    inner=$(chroot "$R" /usr/bin/realpath -m "$dest" 2>/dev/null) || inner=$dest
    bind_at[$inner]=$src$'\t'$mode
done
mapfile -t mounts < <(for inner in "${!bind_at[@]}"; do
                          printf '%s\t%s\t%s\n' "$(tr -cd / <<<"$inner" | wc -c)" "$inner" "${bind_at[$inner]}"
                      done | sort -n -k1,1)
for m in "${mounts[@]}"; do
    IFS=$'\t' read -r _ inner src _ <<<"$m"
    if [ -d "$src" ]; then
        mkdir -p "$R$inner" 2>/dev/null || die "cannot make the mount point $inner in the image"
    elif [ ! -e "$R$inner" ]; then
        mkdir -p "$R$(dirname "$inner")" && touch "$R$inner" || die "cannot make the mount point $inner in the image"
    fi
done
mkdir -p "$R/proc" "$R/sys" "$R/dev"
# the root read-only, then the writable binds on top of it
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
for m in "${mounts[@]}"; do
    IFS=$'\t' read -r _ inner src mode <<<"$m"
    mount --rbind "$src" "$R$inner"
    [ "$mode" = ro ] && mount -o remount,bind,ro "$R$inner"
done

# --- the environment, as apptainer builds it --------------------------------------------------------
envs=()
if [ "$cleanenv" = 1 ]; then
    for v in HOME USER LOGNAME TERM LANG LC_ALL TZ; do [ -n "${!v:-}" ] && envs+=("$v=${!v}"); done
else
    while IFS= read -r -d '' kv; do
        case ${kv%%=*} in
            PATH|LD_LIBRARY_PATH|LD_PRELOAD|PS1|PROMPT_COMMAND|SHLVL|_|PWD|OLDPWD|BASH_FUNC_*|APPTAINER_*|SINGULARITY_*|APPTAINERENV_*|SINGULARITYENV_*) ;;
            *) envs+=("$kv") ;;
        esac
    done < <(env -0)
fi
while IFS= read -r -d '' kv; do  # APPTAINERENV_X=v (and SINGULARITYENV_X=v) set X=v inside
    case $kv in APPTAINERENV_*|SINGULARITYENV_*) envs+=("${kv#*ENV_}") ;; esac
done < <(env -0)
envs+=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
       LD_LIBRARY_PATH=/.singularity.d/libs
       APPTAINER_CONTAINER="$IMAGE" APPTAINER_NAME="$(basename "$IMAGE")" APPTAINER_COMMAND="$cmd"
       SINGULARITY_CONTAINER="$IMAGE" SINGULARITY_NAME="$(basename "$IMAGE")" SINGULARITY_COMMAND="$cmd")
[ -n "$app" ] && envs+=(APPTAINER_APPNAME="$app" SINGULARITY_APPNAME="$app" SCIF_APPNAME="$app")

# --- what to run --------------------------------------------------------------------------------------
case $cmd in
    run) target=("${app_dir:-/.singularity.d}${app:+/scif}/runscript") ;;
    test) target=("${app_dir:-/.singularity.d}${app:+/scif}/test")
          [ -e "$R${target[0]}" ] || { echo "No test script found in container, exiting" >&2; exit 0; } ;;
    exec) target=() ;;
esac
[ ${#target[@]} -eq 0 ] || [ -e "$R${target[0]}" ] || die "the image has no ${target[0]}"
cwd=${pwd_in:-$here}
[ -d "$R$cwd" ] || cwd=${pwd_in:+$pwd_in}
[ -d "$R${cwd:-/nonexistent}" ] || cwd=/

launch='cd "$1" || exit 255; shift
for _f in /.singularity.d/env/*.sh; do [ -f "$_f" ] && . "$_f"; done
unset _f
exec "$@"'
exec env -i "${envs[@]}" chroot "$R" /bin/sh -c "$launch" run-sif "$cwd" ${target[@]+"${target[@]}"} "$@"
