#!/usr/bin/env bash
# Where a server's CPU went, by thread and by system call, from a
# `perf record --call-graph dwarf` file (scripts/bench-api.sh's PROFILE=DIR
# writes them): each sample is counted under the thread it was taken on
# and the syscall on its stack (`pagefault` for a page fault, `-` for
# neither: user code, or the kernel outside a syscall).
#
#   bash scripts/perf-syscalls.sh DIR/perf-sqlite-held.data | head -20
set -euo pipefail
perf script -i "$1" -F comm,ip,sym 2>/dev/null | awk '
  function out() { k = comm " " (sys != "" ? sys : (fault ? "pagefault" : "-")); c[k]++; total++ }
  /^[^ \t]/ { if (n) out(); comm = $1; sys = ""; fault = 0; n = 1; next }
  /__x64_sys_|__do_sys_|__se_sys_/ && sys == "" { for (i = 1; i <= NF; i++) if ($i ~ /sys_/) { sys = $i; break } }
  /exc_page_fault/ { fault = 1 }
  END { if (n) out(); for (k in c) printf "%6.2f%% %s\n", 100 * c[k] / total, k }' | sort -rn
