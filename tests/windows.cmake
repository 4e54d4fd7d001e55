# Windows-only tests (the iocp backend and named pipes): registered on
# WIN32 only, run under wine by ctest (cmake/wine.cmake).
if(WIN32)
  # The iocp backend through its seam: builds src/iocp/loop.c into itself
  # (test-iocp-seam.c includes it) and links what the backend calls.
  add_executable(test-iocp-seam test-iocp-seam.c ../src/common/error.c)
  cqw_target_defaults(test-iocp-seam)
  target_include_directories(test-iocp-seam PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src
    ${cqw_platform_dir} ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(test-iocp-seam PRIVATE ${cqw_cmocka} ${cqw_os_libs}
    Threads::Threads)
  add_test(NAME test-iocp-seam COMMAND test-iocp-seam)
  set_tests_properties(test-iocp-seam PROPERTIES TIMEOUT 120
    SKIP_RETURN_CODE 77)

  # The library's sources as a static archive, for the tests of src/win
  # that call internal functions (hidden in the DLL).
  list(TRANSFORM cqw_sources PREPEND ${PROJECT_SOURCE_DIR}/
    OUTPUT_VARIABLE cqw_win_internal_src)
  add_library(cqw_win_internal STATIC ${cqw_win_internal_src})
  cqw_target_defaults(cqw_win_internal)
  target_include_directories(cqw_win_internal PUBLIC
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src
    ${cqw_platform_dir})
  foreach(b IN LISTS CQW_BACKENDS)
    string(TOUPPER "${b}" B)
    target_compile_definitions(cqw_win_internal PUBLIC CQW_HAVE_${B}=1)
  endforeach()
  target_link_libraries(cqw_win_internal PUBLIC ${cqw_os_libs}
    Threads::Threads)

  # src/win through its internal calls: named pipes (message transport,
  # listener, wait, handles), Winsock TCP (stream transport), BCrypt.
  foreach(t test-win-pipe test-win-sock)
    add_executable(${t} ${t}.c)
    cqw_target_defaults(${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
    target_link_libraries(${t} PRIVATE cqw_win_internal ${cqw_cmocka})
    add_test(NAME ${t} COMMAND ${t})
    set_tests_properties(${t} PROPERTIES TIMEOUT ${cqw_suite_timeout}
      SKIP_RETURN_CODE 77)
  endforeach()
  cqw_unit_test(test-win-crypto test-win-crypto.c ../src/win/crypto.c
    ../src/common/error.c)

  # src/win through the public API (pipes, TCP, the handshake, wait on
  # 200 items, a handle duplicated into a child process it starts).
  cqw_suite_binary(test-win-api test-win-api.c)
  add_test(NAME test-win-api COMMAND test-win-api)
  set_tests_properties(test-win-api PROPERTIES TIMEOUT ${cqw_suite_timeout}
    SKIP_RETURN_CODE 77)

  # WIRE.md §4.6 over a named pipe: the client's answers byte for byte.
  cqw_suite_binary(test-win-vectors test-win-vectors.c)
  add_test(NAME test-win-vectors COMMAND test-win-vectors)
  set_tests_properties(test-win-vectors PROPERTIES TIMEOUT 120
    SKIP_RETURN_CODE 77)

  # The iocp backend through the whole library (public API): pipes through
  # the message framer, TCP through the stream framer.
  cqw_suite_binary(test-iocp-loop test-iocp-loop.c)
  add_test(NAME test-iocp-loop COMMAND test-iocp-loop)
  set_tests_properties(test-iocp-loop PROPERTIES TIMEOUT ${cqw_suite_timeout}
    SKIP_RETURN_CODE 77 ENVIRONMENT "CQW_BACKEND=iocp;CQW_EXPECT_BACKEND=iocp")

  # Servers on the loop on iocp (issue 9): accepts as AcceptEx and
  # ConnectNamedPipe, connects as ConnectEx and CreateFile, handshakes as
  # ops; over TCP and named pipes.
  cqw_suite_binary(test-win-server test-win-server.c)
  add_test(NAME test-win-server COMMAND test-win-server)
  set_tests_properties(test-win-server PROPERTIES
    TIMEOUT ${cqw_suite_timeout} SKIP_RETURN_CODE 77
    ENVIRONMENT "CQW_BACKEND=iocp;CQW_EXPECT_BACKEND=iocp")
endif()
