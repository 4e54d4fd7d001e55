# Cross-compiling for 64-bit Windows with Debian's mingw-w64
# (gcc-mingw-w64-x86-64-win32), the programs run under wine
# (scripts/wine-run.sh, set up per build directory by cmake/wine.cmake).
#
#   cmake --preset mingw      (or -DCMAKE_TOOLCHAIN_FILE=<this file>)
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_VERSION 10.0)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(cqw_mingw_triple x86_64-w64-mingw32)
find_program(CMAKE_C_COMPILER NAMES ${cqw_mingw_triple}-gcc-win32
  ${cqw_mingw_triple}-gcc REQUIRED)
find_program(CMAKE_CXX_COMPILER NAMES ${cqw_mingw_triple}-g++-win32
  ${cqw_mingw_triple}-g++)
find_program(CMAKE_RC_COMPILER NAMES ${cqw_mingw_triple}-windres)
find_program(CMAKE_AR NAMES ${cqw_mingw_triple}-ar REQUIRED)
find_program(CMAKE_RANLIB NAMES ${cqw_mingw_triple}-ranlib REQUIRED)

# Headers and libraries from the mingw-w64 sysroot only; programs (cmake's
# helpers, bash, python) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${cqw_mingw_triple})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Every .exe and the DLL run under wine without gcc's or winpthread's
# DLLs next to them: -static links libgcc and, where Threads::Threads
# asks for pthreads, winpthread from their archives (the system DLLs'
# import libraries are archives too, so they stay imports).
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static")

# The programs run under wine through CMAKE_CROSSCOMPILING_EMULATOR, which
# cmake/wine.cmake sets (it names the build directory's own prefix).
