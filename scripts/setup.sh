#!/usr/bin/env bash
# Installs what strata's RUN steps and tests need beyond cargo, from Debian's packages:
#   runc            the OCI runtime RUN steps execute in
#   umoci, skopeo   real tools the tests use to check that strata's OCI output is valid
#   zstd, pigz      command-line codecs the benchmark compares against
#   docker-registry, htpasswd (apache2-utils)  a real OCI registry on loopback for the registry tests
# Safe to run repeatedly: it installs only what is missing. Without root it only reports.
set -euo pipefail

need=()
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v pigz >/dev/null 2>&1 || need+=(pigz)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)

if [ ${#need[@]} -eq 0 ]; then
  echo "setup: runc, umoci, skopeo, zstd, pigz, docker-registry and htpasswd are present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})." >&2
  echo "setup: without them RUN steps and some tests are skipped, with a message saying why." >&2
  exit 0
fi
echo "setup: installing ${need[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "setup: done"
