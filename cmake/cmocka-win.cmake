# cmocka for the Windows build (Debian's libcmocka-dev is Linux-only):
# Debian's own source package, fetched at build time by
# scripts/cmocka-win.sh into this build directory (kept there: a rebuild
# does not fetch again) and compiled straight into a static library,
# cqw_cmocka_win. Nothing of cmocka is in the repository.
set(cqw_cmocka_cache ${PROJECT_BINARY_DIR}/_deps/cmocka-debian)
set(cqw_cmocka_src ${cqw_cmocka_cache}/cmocka)
find_program(CQW_BASH bash REQUIRED)

add_custom_command(
  OUTPUT ${cqw_cmocka_src}/src/cmocka.c ${cqw_cmocka_src}/include/cmocka.h
  COMMAND ${CQW_BASH} ${PROJECT_SOURCE_DIR}/scripts/cmocka-win.sh
    ${cqw_cmocka_cache}
  DEPENDS ${PROJECT_SOURCE_DIR}/scripts/cmocka-win.sh
  COMMENT "cmocka for Windows: apt-get source cmocka (scripts/cmocka-win.sh)"
  VERBATIM)
add_custom_target(cqw_cmocka_fetch
  DEPENDS ${cqw_cmocka_src}/src/cmocka.c ${cqw_cmocka_src}/include/cmocka.h)

# What cmocka's own configure checks find with mingw-w64's headers and
# C runtime (ConfigureChecks.cmake of cmocka 1.1).
set(cqw_cmocka_have ASSERT_H INTTYPES_H IO_H MALLOC_H MEMORY_H SETJMP_H
  SIGNAL_H STDARG_H STDDEF_H STDINT_H STDIO_H STDLIB_H STRINGS_H STRING_H
  SYS_STAT_H SYS_TYPES_H TIME_H UNISTD_H CALLOC EXIT FPRINTF SNPRINTF
  VSNPRINTF FREE LONGJMP MALLOC MEMCPY MEMSET PRINTF SETJMP SIGNAL STRCMP
  GCC_THREAD_LOCAL_STORAGE)
set(cqw_cmocka_config "/* cmake/cmocka-win.cmake: mingw-w64 */\n")
foreach(h IN LISTS cqw_cmocka_have)
  string(APPEND cqw_cmocka_config "#define HAVE_${h} 1\n")
endforeach()
file(CONFIGURE OUTPUT ${cqw_cmocka_cache}/config/config.h
  CONTENT "${cqw_cmocka_config}")

# cmocka.h marks print_message() and friends __format__(__printf__), which
# mingw-w64's gcc checks as Microsoft's printf (no %zu, %lld); the library
# itself formats with mingw's C99 printf (__USE_MINGW_ANSI_STDIO, set for
# the whole Windows build), which has them. A wrapper found first on the
# include path has the checks match what runs.
file(CONFIGURE OUTPUT ${cqw_cmocka_cache}/wrap/cmocka.h CONTENT [[
/* cmake/cmocka-win.cmake: cmocka.h with its format checks as C99 printf. */
#define __printf__ __gnu_printf__
#include_next <cmocka.h>
#undef __printf__
]])

add_library(cqw_cmocka_win STATIC ${cqw_cmocka_src}/src/cmocka.c)
add_dependencies(cqw_cmocka_win cqw_cmocka_fetch)
set_target_properties(cqw_cmocka_win PROPERTIES C_STANDARD 99
  C_EXTENSIONS ON)
target_compile_definitions(cqw_cmocka_win PRIVATE HAVE_CONFIG_H)
target_include_directories(cqw_cmocka_win
  PRIVATE ${cqw_cmocka_cache}/config
  PUBLIC ${cqw_cmocka_cache}/wrap ${cqw_cmocka_src}/include)
