#!/usr/bin/env bash
# Installs the Debian packages audiolp needs when they are missing (root: apt-get; otherwise print the command).
# Data packages for MiniStew are not installed: audiolp fetches them with `apt-get download` and unpacks them
# with `dpkg -x` into its own cache, which only needs an up-to-date package list.
set -euo pipefail
PACKAGES=()  # Debian packages the project needs at run time (none beyond the base image yet)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
need_lists=0
[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ] || need_lists=1
if [ ${#missing[@]} -eq 0 ] && [ $need_lists -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "audiolp needs system packages; run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  [ ${#missing[@]} -eq 0 ] || exit 1
fi
