#!/usr/bin/env bash
# Build the exact pixel stage (csrc/exact_cpu.c) into a standalone harness under ThreadSanitizer
# (data races between the bands of one image, and between a streamed decode's pixel thread and
# the thread that hands it block rows, then takes the bottom rows) and AddressSanitizer + UBSan
# (out-of-bounds, undefined arithmetic), and run it: tools/exact_cpu_harness.c decodes random
# images of every sampling shape in one band, in several, and streamed, and compares them.
#   bash tools/sanitize_exact_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
inc=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
lib=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
ver=$(python3 -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
# TSan cannot run ifunc resolvers (the target_clones of HOT): build its copy without them.
sed 's/#define HOT __attribute__((target_clones("avx2", "default")))/#define HOT/' csrc/exact_cpu.c > "$tmp/exact_cpu.c"
for san in thread address,undefined; do
    gcc -O1 -g -fwrapv -pthread -fsanitize=$san -fno-sanitize-recover=undefined -I"$inc" \
        -DEXACT_CPU_SOURCE="\"$tmp/exact_cpu.c\"" tools/exact_cpu_harness.c -o "$tmp/harness" \
        -L"$lib" -lpython"$ver" -Wl,-rpath,"$lib" -lm
    echo "-fsanitize=$san:"
    TSAN_OPTIONS=halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 "$tmp/harness"
done
