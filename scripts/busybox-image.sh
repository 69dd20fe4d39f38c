#!/usr/bin/env bash
# Builds a tiny local image from Debian's busybox-static (no image registry needed): /bin holds
# busybox and its applets (sh, httpd, nc, sleep, ...). Usage: busybox-image.sh [TAG]
set -euo pipefail
TAG="${1:-cortex-example/busybox:1}"
if docker image inspect "$TAG" >/dev/null 2>&1; then exit 0; fi
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || { echo "busybox-image: $BUSYBOX is missing (apt-get install busybox-static)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/www" "$dir/tmp"
cp "$BUSYBOX" "$dir/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$dir/bin/$applet"
done
echo ok > "$dir/www/health"
tar -C "$dir" -c . | docker import -c 'ENV PATH=/bin' - "$TAG" >/dev/null
echo "busybox-image: built $TAG"
