#!/usr/bin/env bash
# A Docker-compatible engine for the docker sandbox backend, on a machine that cannot pull images:
# Podman from Debian's packages serving the Docker API on a socket, and the experiment image built
# locally from a Debian root filesystem made with debootstrap (package mirrors only, no registry).
# Idempotent: every step checks first. Prints the socket URL (DOCKER_HOST) on its last line.
# Needs root and Debian's package mirror. Environment overrides:
#   AUTOSOTA_PODMAN_SOCKET  (default /run/podman/podman.sock)
#   AUTOSOTA_EXPERIMENT_IMAGE (default localhost/autosota/experiment:latest)
#   AUTOSOTA_DEBIAN_MIRROR  (default http://deb.debian.org/debian), AUTOSOTA_DEBIAN_SUITE (default bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKET=${AUTOSOTA_PODMAN_SOCKET:-/run/podman/podman.sock}
IMAGE=${AUTOSOTA_EXPERIMENT_IMAGE:-localhost/autosota/experiment:latest}
BASE_IMAGE=localhost/autosota/debian-python:base
MIRROR=${AUTOSOTA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${AUTOSOTA_DEBIAN_SUITE:-bookworm}
CACHE=${AUTOSOTA_PODMAN_CACHE:-/var/cache/autosota}
LOCK=$CACHE/setup-podman.lock

say() { echo "setup-podman: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (podman's rootful socket and debootstrap)"
    exit 2
fi
mkdir -p "$CACHE"
exec 9>"$LOCK"
flock -w 1800 9  # concurrent test sessions wait for one another instead of racing

# 1. Packages.
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq podman runc debootstrap >/dev/null
fi

# 2. Engine configuration: runc as the runtime, no default ulimits (both needed on these machines).
#    A drop-in, so that an existing containers.conf is left as it is.
CONF=/etc/containers/containers.conf.d/50-autosota.conf
if [ ! -f "$CONF" ]; then
    say "writing $CONF"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<'EOF'
# written by autosota scripts/setup-podman.sh
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
fi

# 3. The Docker-compatible API socket.
api_up() { curl -fsS --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }
if ! api_up; then
    say "starting podman system service on $SOCKET"
    mkdir -p "$(dirname "$SOCKET")"
    rm -f "$SOCKET"
    # Detached, and without the lock's descriptor, which it would otherwise hold for its whole life.
    setsid nohup podman system service --time=0 "unix://$SOCKET" </dev/null >"$CACHE/podman-service.log" 2>&1 9>&- &
    for _ in $(seq 1 100); do api_up && break; sleep 0.1; done
    api_up || { say "the podman API did not come up; see $CACHE/podman-service.log"; exit 1; }
fi

# 4. The base image: a minimal Debian with python3 and numpy, from the package mirror.
if ! podman image exists "$BASE_IMAGE"; then
    ROOTFS=$CACHE/rootfs-$SUITE
    if [ ! -f "$ROOTFS/.complete" ]; then
        say "debootstrap $SUITE into $ROOTFS (a few minutes, once)"
        rm -rf "$ROOTFS"
        debootstrap --variant=minbase --include=python3,python3-numpy,ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { say "debootstrap failed; see $CACHE/debootstrap.log"; exit 1; }
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
        touch "$ROOTFS/.complete"
    fi
    say "importing $BASE_IMAGE"
    tar --exclude=./.complete -C "$ROOTFS" -c . | podman import --change 'CMD ["/bin/sh"]' - "$BASE_IMAGE" >"$CACHE/import.log" 2>&1
fi

# 5. The experiment image, rebuilt when its Dockerfile changes.
DIGEST=$(sha256sum deploy/images/experiment/Dockerfile | cut -c1-16)
if [ "$(podman image inspect --format '{{ index .Labels "autosota.dockerfile" }}' "$IMAGE" 2>/dev/null || true)" != "$DIGEST" ]; then
    say "building $IMAGE"
    podman build --pull=never --network=none --label "autosota.dockerfile=$DIGEST" -t "$IMAGE" deploy/images/experiment >"$CACHE/build.log" 2>&1 \
        || { say "image build failed; see $CACHE/build.log"; exit 1; }
fi

echo "unix://$SOCKET"
