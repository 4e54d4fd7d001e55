#!/bin/sh
# Every symbol the library defines for others starts with cqw_. A shared
# library is checked through its dynamic symbols, which must not include
# the internal cqw__ ones either; a static archive through its objects
# (internal symbols are global there, hidden only at link time); a Windows
# DLL through its export table.
# Sanitizer bookkeeping symbols (__asan*, __odr_asan*, ...) are not ours.
lib="$1"
case "$lib" in
*.dll)
	# The export table of a PE DLL (mingw-w64's objdump -p): the lines
	# after "[Ordinal/Name Pointer] Table" are "\t[  N] name".
	syms=$("${CQW_OBJDUMP:-objdump}" -p "$lib" |
		awk '/\[Ordinal\/Name Pointer\] Table/ { t = 1; next }
		     t && /^\t\[ *[0-9]+\] / { print $NF; next }
		     t { t = 0 }') ;;
*.a) syms=$(nm -g --defined-only "$lib" | awk 'NF == 3 && $2 ~ /[TDRB]/ { print $3 }') ;;
*) syms=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDRB]/ { print $3 }') ;;
esac
syms=$(printf '%s\n' "$syms" | grep -Ev '^__(odr_)?(asan|ubsan|tsan|lsan)' || true)
[ -n "$syms" ] || { echo "no symbols found in $lib"; exit 1; }
case "$lib" in
*.a) bad=$(printf '%s\n' "$syms" | grep -v '^cqw_') ;;
*) bad=$(printf '%s\n' "$syms" | grep -v '^cqw_'; printf '%s\n' "$syms" | grep '^cqw__') ;;
esac
if [ -n "$bad" ]; then
	echo "symbols outside the cqw_ namespace:"; printf '%s\n' "$bad"; exit 1
fi
echo "$(printf '%s\n' "$syms" | wc -l) exported symbols, all cqw_"
