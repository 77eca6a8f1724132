#!/usr/bin/env bash
# Assembles Fledge's container images without a container daemon, writing the
# OCI image layouts directly (tar, gzip, sha256sum):
#
#   OUT/fledge             ghcr.io/fledge-dev/fledge:VERSION
#       the fledge binary (/usr/local/bin/fledge, the entrypoint), CA
#       certificates, /etc/passwd and /etc/group with the non-root user
#       65532, and the shared libraries the binary needs (none when static).
#       No shell. Runs as 65532:65532 and writes nothing: fine with a
#       read-only root filesystem.
#   OUT/fledge-loadtester  ghcr.io/fledge-dev/fledge-loadtester:VERSION
#       the same layer, plus busybox (sh, bash as sh, grep, sed, awk, ...)
#       and curl with its libraries, for `type: bash` webhooks; entrypoint
#       `fledge loadtester`; /tmp writable only if a volume is mounted there.
#
# VERSION is the workspace version (Cargo.toml). Two ways to get the binary:
#   scripts/image.sh                         builds a static release binary
#                                            (+crt-static, x86_64-unknown-linux-gnu)
#   scripts/image.sh --binary target/debug/fledge
#                                            uses a binary already built, with
#                                            the libraries `ldd` lists (CI does this)
# Other options:
#   --out DIR       where to write (default target/image); replaced if present
#   --stage-only    write only the root filesystems (OUT/rootfs/base, the
#                   fledge image; OUT/rootfs/loadtester, what the load tester
#                   adds), as the Dockerfile uses them
#
# busybox comes from Debian's busybox-static package, downloaded once into
# ~/.cache/fledge (`--prepare` does only that, for a CI prepare step); curl and
# the CA certificates from this machine (installed with apt-get if missing).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${FLEDGE_CACHE:-$HOME/.cache/fledge}"
registry=ghcr.io/fledge-dev
uid=65532
# Layers and configs carry this time, so the same inputs give the same digests.
epoch=0
created=1970-01-01T00:00:00Z

binary=""
out="$repo/target/image"
stage_only=false
prepare_only=false

die() {
    echo "image.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary)
            [[ $# -ge 2 ]] || die "--binary needs a path, e.g. --binary target/debug/fledge"
            binary="$2"
            shift 2
            ;;
        --out)
            [[ $# -ge 2 ]] || die "--out needs a directory, e.g. --out target/image"
            out="$2"
            shift 2
            ;;
        --stage-only)
            stage_only=true
            shift
            ;;
        --prepare)
            prepare_only=true
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

apt_install() {
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    echo "image.sh: installing $* with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

# Debian's static busybox, unpacked once into the cache; prints its path.
busybox() {
    local dir="$cache/busybox-static"
    if [[ ! -x "$dir/bin/busybox" ]]; then
        command -v apt-get >/dev/null || die "busybox-static needs apt-get (Debian); or put a static busybox at $dir/bin/busybox"
        local tmp
        tmp="$(mktemp -d)"
        echo "image.sh: downloading busybox-static into $dir" >&2
        (cd "$tmp" && apt-get download -qq busybox-static 2>/dev/null) \
            || (apt-get update -qq >/dev/null 2>&1 || true; cd "$tmp" && apt-get download -qq busybox-static 2>/dev/null) \
            || die "apt-get download busybox-static failed"
        rm -rf "$dir.new" && mkdir -p "$dir.new"
        dpkg-deb -x "$tmp"/busybox-static_*.deb "$dir.new"
        rm -rf "$tmp" "$dir" && mv "$dir.new" "$dir"
    fi
    [[ -x "$dir/bin/busybox" ]] || die "no busybox in $dir"
    echo "$dir/bin/busybox"
}

if $prepare_only; then
    busybox >/dev/null
    command -v curl >/dev/null || apt_install curl
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || apt_install ca-certificates
    echo "image.sh: prepared ($cache/busybox-static)" >&2
    exit 0
fi

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
[[ -n "$version" ]] || die "no version under [workspace.package] in $repo/Cargo.toml"
# The revision is known only for a binary built here from this checkout.
revision=""

if [[ -z "$binary" ]]; then
    [[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || apt_install libc6-dev
    revision="${FLEDGE_GIT_REVISION:-$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || true)}"
    echo "image.sh: building a static release binary (takes a while)" >&2
    (cd "$repo" && FLEDGE_GIT_REVISION="$revision" RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked -p fledge --bin fledge --target x86_64-unknown-linux-gnu)
    # Where cargo put it: CARGO_TARGET_DIR or build.target-dir move it out of target/.
    target_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    binary="${target_dir:-$repo/target}/x86_64-unknown-linux-gnu/release/fledge"
fi
[[ -f "$binary" && -x "$binary" ]] || die "--binary $binary is not an executable file; build it first (cargo build --bin fledge)"
for tool in tar gzip sha256sum ldd; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || apt_install ca-certificates
command -v curl >/dev/null || apt_install curl

# The shared libraries ldd lists for `file`, with the loader; none for a
# static executable.
libraries() {
    ldd "$1" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\) (.*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
}

# Copies the libraries of `file` into `root` at the same paths, except those
# `have` (a root filesystem) already holds.
with_libraries() {
    local root="$1" file="$2" have="${3:-$1}" lib
    while read -r lib; do
        [[ -e "$have$lib" || -e "$root$lib" ]] && continue
        install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(libraries "$file")
}

stage="$out/rootfs"
# Replace only what an earlier run wrote.
if [[ -e "$out" && -n "$(ls -A "$out" 2>/dev/null)" && ! -e "$out/fledge/oci-layout" && ! -d "$out/rootfs" ]]; then
    die "--out $out exists and holds something else; name an empty or new directory"
fi
rm -rf "$out"
mkdir -p "$stage/base" "$stage/loadtester"

# The fledge image: one layer.
base="$stage/base"
install -D -m 0755 "$binary" "$base/usr/local/bin/fledge"
with_libraries "$base" "$binary"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$base/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n' $uid $uid >"$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:%d:\n' $uid >"$base/etc/group"
# Host names from /etc/hosts, then DNS (glibc's built-in modules).
printf 'hosts: files dns\n' >"$base/etc/nsswitch.conf"
chmod 0644 "$base/etc/passwd" "$base/etc/group" "$base/etc/nsswitch.conf"

# What the load tester adds: busybox as the shell and tools, curl.
lt="$stage/loadtester"
install -D -m 0755 "$(busybox)" "$lt/bin/busybox"
# The tools a webhook command line uses; bash is busybox's sh (ash).
for applet in sh ash grep egrep fgrep sed awk cat echo printf test [ [[ sleep kill env \
    head tail cut tr wc sort uniq tee xargs date true false expr seq timeout wget nc \
    ls mkdir rm mv cp mktemp basename dirname base64 sha256sum id; do
    ln -s busybox "$lt/bin/$applet"
done
printf '#!/bin/sh\nexec /bin/sh "$@"\n' >"$lt/bin/bash"
chmod 0755 "$lt/bin/bash"
curl_bin="$(command -v curl)"
install -D -m 0755 "$(readlink -f "$curl_bin")" "$lt/usr/bin/curl"
# Libraries the fledge layer already holds stay out of this one.
with_libraries "$lt" "$curl_bin" "$base"
mkdir -p "$lt/tmp" && chmod 1777 "$lt/tmp"

if $stage_only; then
    echo "image.sh: root filesystems in $stage" >&2
    exit 0
fi

# OCI image layout writing.
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# Writes root filesystem `$1` as a gzipped layer into $blobs; sets
# layer_digest, layer_size and diff_id (the digest of the uncompressed tar).
write_layer() {
    local dir="$1" tmp="$blobs/layer.tar"
    (cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort \
        | tar --sort=name --mtime=@$epoch --owner=0 --group=0 --numeric-owner \
            --format=gnu -cf "$tmp" -T -)
    diff_id="sha256:$(sha "$tmp")"
    gzip -n -6 "$tmp"
    layer_digest="sha256:$(sha "$tmp.gz")"
    layer_size="$(size "$tmp.gz")"
    mv "$tmp.gz" "$blobs/${layer_digest#sha256:}"
}

# Stores stdin as a blob of `$1`; prints "digest size".
write_blob() {
    local layout="$1" tmp="$1/blob.json" digest
    cat >"$tmp"
    digest="$(sha "$tmp")"
    echo "sha256:$digest $(size "$tmp")"
    mv "$tmp" "$layout/blobs/sha256/$digest"
}

# image NAME ENTRYPOINT_JSON ENV_JSON LAYER... (each "digest size diff_id")
image() {
    local name="$1" entrypoint="$2" env="$3"
    shift 3
    local layout="$out/$name" ref="$registry/$name:$version"
    mkdir -p "$layout/blobs/sha256"
    local diff_ids="" layers="" history="" l d s i
    for l in "$@"; do
        read -r d s i <<<"$l"
        ln -f "$blobs/${d#sha256:}" "$layout/blobs/sha256/${d#sha256:}"
        diff_ids+="${diff_ids:+,}\"$i\""
        history+="${history:+,}{\"created\":\"$created\",\"created_by\":\"scripts/image.sh\"}"
        layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$d\",\"size\":$s}"
    done
    local labels="\"org.opencontainers.image.title\":\"$name\",\"org.opencontainers.image.version\":\"$version\",\"org.opencontainers.image.source\":\"https://github.com/fledge-dev/fledge\",\"org.opencontainers.image.licenses\":\"Apache-2.0\""
    [[ -z "$revision" ]] || labels+=",\"org.opencontainers.image.revision\":\"$revision\""
    local config manifest
    config="$(printf '{"architecture":"amd64","os":"linux","created":"%s","config":{"User":"%d:%d","Entrypoint":%s,"Env":%s,"WorkingDir":"/","Labels":{%s}},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' \
        "$created" $uid $uid "$entrypoint" "$env" "$labels" "$diff_ids" "$history" | write_blob "$layout")"
    read -r d s <<<"$config"
    manifest="$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s],"annotations":{"org.opencontainers.image.version":"%s"}}' \
        "$d" "$s" "$layers" "$version" | write_blob "$layout")"
    read -r d s <<<"$manifest"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"%s","io.containerd.image.name":"%s"}}]}\n' \
        "$d" "$s" "$version" "$ref" >"$layout/index.json"
    local total
    total="$(du -sb --apparent-size "$layout/blobs" | cut -f1)"
    echo "image.sh: $ref in $layout ($total bytes compressed)"
}

# Layers are written once; the images hard-link the ones they share.
blobs="$out/layers"
mkdir -p "$blobs"
write_layer "$base"
base_layer="$layer_digest $layer_size $diff_id"
write_layer "$lt"
lt_layer="$layer_digest $layer_size $diff_id"

certs='"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"'
image fledge '["/usr/local/bin/fledge"]' "[\"PATH=/usr/local/bin\",$certs]" "$base_layer"
image fledge-loadtester '["/usr/local/bin/fledge","loadtester"]' \
    "[\"PATH=/usr/local/bin:/usr/bin:/bin\",$certs]" "$base_layer" "$lt_layer"
rm -rf "$blobs" "$stage"
