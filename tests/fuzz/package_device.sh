#!/usr/bin/env bash
# Packs the libFuzzer binaries of build/fuzz (preset `fuzz`) for a machine without this one's
# packages: build/fuzz/device/{bin,lib,glibc,empty}. bin/: the fuzz targets with their debug
# sections compressed; lib/: every shared library ldd lists except glibc's; glibc/: glibc and its
# loader, for a box whose own glibc is older. The campaign script (fuzz.sh, run on that box from
# the repository root) reads the seeds from tests/fuzz/corpus. Usage: tests/fuzz/package_device.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
src=build/fuzz/tests/fuzz
out=build/fuzz/device
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/glibc" "$out/empty"
for b in "$src"/tandem_fuzz_http "$src"/tandem_fuzz_wire "$src"/tandem_fuzz_config; do
    objcopy --compress-debug-sections=zlib "$b" "$out/bin/$(basename "$b")"
    ldd "$b" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
        case "$(basename "$lib")" in
            ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*)
                cp -nL "$lib" "$out/glibc/" ;;
            *) cp -nL "$lib" "$out/lib/" ;;
        esac
    done
done
du -sh "$out" "$out"/*
