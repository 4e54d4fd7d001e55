# Running the Windows build's programs under wine (included by the top
# CMakeLists.txt when cross-compiling for Windows on a host that is not).
#
# Every program ctest starts goes through scripts/wine-run.sh
# (CMAKE_CROSSCOMPILING_EMULATOR), with this build directory's own prefix,
# so two build directories never share one. cqw_wine_fixtures() (called
# by tests/CMakeLists.txt once every test is registered) adds the fixture
# that starts wine's persistent server and services once, before the
# first test, and stops them after the last; WINDOWS.md says why.
set(CQW_WINEPREFIX ${PROJECT_BINARY_DIR}/wine CACHE PATH
  "The wine prefix the tests of this build run in (one per build directory)")
set(cqw_wine_run ${PROJECT_SOURCE_DIR}/scripts/wine-run.sh)
set(CMAKE_CROSSCOMPILING_EMULATOR
  ${cqw_wine_run};--prefix;${CQW_WINEPREFIX})

find_program(CQW_BASH bash)

# The fixture's two tests (once, from tests/CMakeLists.txt).
function(cqw_wine_fixture_tests)
  add_test(NAME wine-start
    COMMAND ${CQW_BASH} ${cqw_wine_run} --prefix ${CQW_WINEPREFIX} --start)
  add_test(NAME wine-stop
    COMMAND ${CQW_BASH} ${cqw_wine_run} --prefix ${CQW_WINEPREFIX} --stop)
  # A new prefix takes about 10 s, a loaded machine several times that.
  set_tests_properties(wine-start PROPERTIES FIXTURES_SETUP cqw_wine
    TIMEOUT 300)
  set_tests_properties(wine-stop PROPERTIES FIXTURES_CLEANUP cqw_wine
    TIMEOUT 60)
endfunction()

# Every test registered so far in the calling directory needs the fixture
# (set_tests_properties reaches only the calling directory's tests: each
# directory that registers tests calls this after its last add_test).
function(cqw_wine_require)
  get_property(all DIRECTORY PROPERTY TESTS)
  list(REMOVE_ITEM all wine-start wine-stop)
  if(all)
    set_tests_properties(${all} PROPERTIES FIXTURES_REQUIRED cqw_wine)
  endif()
endfunction()
