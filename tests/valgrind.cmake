# valgrind memcheck over the core suite (issue 7, "Prove it" 2).
#
# Included by tests/CMakeLists.txt, this registers one ctest entry per
# suite; run as a script (cmake -P, which those entries do) it is the
# runner that judges valgrind's logs.
#
# The loop suite runs with CQW_BACKEND=poll: valgrind cannot see the kernel
# write into io_uring buffers, so every ring receive would look like a read
# of undefined memory. valgrind follows fork() (--trace-children=no only
# stops at exec()), so children run under it too, each with its own log.
# They are judged apart: a child that hits a memory error fails the run,
# but the blocks a child leaves when it _exit()s in the middle of a test
# are the parent's objects, not leaks, so only the main process is held
# to "no definite leak". A sanitizer build cannot run under valgrind:
# there the entries are not registered. Without valgrind they skip.

if(CMAKE_SCRIPT_MODE_FILE)
  # The runner: VG (valgrind), EXE (the test), LOGDIR, SUPP.
  cmake_policy(VERSION 3.20)
  string(REPLACE "," ";" SLOW "${SLOW}")
  file(REMOVE_RECURSE "${LOGDIR}")
  file(MAKE_DIRECTORY "${LOGDIR}")
  execute_process(COMMAND "${VG}" --tool=memcheck --leak-check=full
    --errors-for-leak-kinds=definite --show-leak-kinds=definite
    --trace-children=no --num-callers=30 --error-exitcode=0
    "--suppressions=${SUPP}" "--log-file=${LOGDIR}/vg.%p" "${EXE}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  # Tests that may miss their own progress bound under valgrind (SLOW):
  # their failure, and the objects a failed test leaves, are excused.
  string(REGEX MATCHALL "\\[  FAILED  \\] [a-z_0-9]+\n" failed "${out}")
  set(excused "")
  set(unexcused "")
  foreach(f IN LISTS failed)
    string(REGEX REPLACE "^.*\\] ([a-z_0-9]+)\n$" "\\1" f "${f}")
    if(f IN_LIST SLOW)
      list(APPEND excused "${f}")
    else()
      list(APPEND unexcused "${f}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES excused)
  list(REMOVE_DUPLICATES unexcused)
  file(GLOB logs "${LOGDIR}/vg.*")
  set(pids "")
  foreach(log IN LISTS logs)
    string(REGEX REPLACE ".*vg\\." "" pid "${log}")
    list(APPEND pids "${pid}")
  endforeach()
  set(bad "")
  set(nchildren 0)
  foreach(log IN LISTS logs)
    file(READ "${log}" text)
    string(REGEX MATCH "Parent PID: ([0-9]+)" m "${text}")
    set(parent "${CMAKE_MATCH_1}")
    string(REGEX MATCH "ERROR SUMMARY: ([0-9]+) errors" m "${text}")
    set(errors "${CMAKE_MATCH_1}")
    if(errors STREQUAL "")
      # Killed before it could summarise (a test's own SIGKILL).
      continue()
    endif()
    # One error per leak record; its stack names the test that made it.
    string(REGEX MATCHALL
      "are definitely lost in loss record[^\n]*\n(==[0-9]+==    [^\n]*\n)+"
      leaks "${text}")
    list(LENGTH leaks nleaks)
    if(parent IN_LIST pids)
      math(EXPR nchildren "${nchildren} + 1")
      math(EXPR errors "${errors} - ${nleaks}")
    else()
      foreach(leak IN LISTS leaks)
        foreach(f IN LISTS excused)
          string(FIND "${leak}" " ${f} (" at)
          if(at GREATER -1)
            math(EXPR errors "${errors} - 1")
            break()
          endif()
        endforeach()
      endforeach()
    endif()
    if(errors GREATER 0)
      list(APPEND bad "${log}")
      message("valgrind-run: ${errors} errors in ${log}:\n${text}")
    endif()
  endforeach()
  list(LENGTH logs nlogs)
  message("valgrind-run: ${nlogs} processes (${nchildren} forked "
    "children), test exit status ${rc}")
  if(excused)
    message("valgrind-run: excused (too slow under valgrind): ${excused}")
  endif()
  if(rc EQUAL 77)
    message("valgrind-run: skipped (the test skipped itself)")
  elseif(NOT rc EQUAL 0 AND (unexcused OR NOT excused))
    message(FATAL_ERROR "valgrind-run: the test failed (status ${rc}): "
      "${unexcused}")
  endif()
  if(bad)
    message(FATAL_ERROR "valgrind-run: memcheck errors")
  endif()
  return()
endif()

if(CQW_SANITIZE)
  message(STATUS "valgrind tests: not registered in a sanitizer build")
  return()
endif()

find_program(CQW_VALGRIND valgrind)

# Tests whose progress bound (T_PROGRESS_MS, 5 s) valgrind cannot meet:
# memcheck checks the whole iovec of every writev() against its shadow
# memory, so a 4 MiB send through tiny kernel buffers (a thousand partial
# writes) takes longer than that. Their memory errors still count.
set(cqw_valgrind_slow_test-loop
  test_loop_partial_4mib_socketpair test_loop_partial_4mib_pipe
  test_loop_stream_tiny_buffers_in_order)
# A forked echo child of 40 MiB has 30 s (t_fork_child's alarm), which a
# loaded machine under valgrind can exceed.
set(cqw_valgrind_slow_test-conn test_conn_round_trip_16mib)

foreach(suite test-frame test-auth test-address test-conn test-loop)
  if(NOT TARGET ${suite})
    continue()
  endif()
  if(CQW_VALGRIND)
    string(REPLACE ";" "," slow "${cqw_valgrind_slow_${suite}}")
    add_test(NAME valgrind-${suite} COMMAND ${CMAKE_COMMAND}
      -DVG=${CQW_VALGRIND} -DEXE=$<TARGET_FILE:${suite}> "-DSLOW=${slow}"
      -DLOGDIR=${CMAKE_CURRENT_BINARY_DIR}/valgrind/${suite}
      -DSUPP=${CMAKE_CURRENT_SOURCE_DIR}/valgrind.supp
      -P ${CMAKE_CURRENT_LIST_FILE})
  else()
    add_test(NAME valgrind-${suite} COMMAND sh -c
      "echo 'valgrind-run: skipped: valgrind is not installed (Debian package valgrind)'")
  endif()
  set_tests_properties(valgrind-${suite} PROPERTIES TIMEOUT 900
    ENVIRONMENT "CQW_BACKEND=poll"
    SKIP_REGULAR_EXPRESSION "valgrind-run: skipped" LABELS valgrind)
endforeach()
