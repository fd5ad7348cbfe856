#!/bin/sh
# A realistic job: unpack a small C tree, build it with two jobs, remove it.
#   mixed.sh TREE.tar DIR
set -e
rm -rf "$2"
mkdir -p "$2"
tar xf "$1" -C "$2"
make -s -C "$2" -j2 >/dev/null
rm -rf "$2"
