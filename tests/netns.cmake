# A real network path (tests/netns, scripts/netns-test.sh): two network
# namespaces joined by netem-tun, a user-space link with delay, loss and
# reordering, and Python's multiprocessing.connection at one end and
# cqwire-echo at the other, over the kernel's TCP. Linux only; the script
# exits 77 (skip, with the reason) when not root or when namespaces or
# TUN devices cannot be made here.
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  add_executable(netem-tun ${CMAKE_CURRENT_LIST_DIR}/netns/netem-tun.c)
  cqw_target_defaults(netem-tun)

  find_program(CQW_BASH bash)
  if(CQW_BASH)
    add_test(NAME netns-short
      COMMAND ${CQW_BASH} ${PROJECT_SOURCE_DIR}/scripts/netns-test.sh --short
        --echo $<TARGET_FILE:cqwire-echo> --netem $<TARGET_FILE:netem-tun>)
    # The script bounds itself at 180 s and cleans up; ctest's kill
    # would leave the namespaces behind.
    set_tests_properties(netns-short PROPERTIES TIMEOUT 240
      SKIP_RETURN_CODE 77)
  endif()
endif()
