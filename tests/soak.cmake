# The soak test (tests/soak/): a parent and many forked peers, every
# message checked by sequence number and checksum, peers killed at random.
# The short mode runs in CI once per backend; the long mode is
# scripts/soak.sh.
add_executable(soak soak/main.c soak/parent.c soak/peer.c soak/util.c)
target_include_directories(soak PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/soak)
cqw_target_defaults(soak)
target_link_libraries(soak PRIVATE cqwire Threads::Threads)

# Sanitizers slow every byte down: fewer messages there, same mix; and
# ASan's quarantine keeps freed memory resident, so RSS says nothing there.
if(CQW_SANITIZE)
  set(cqw_soak_short_args --short --messages 100000 --kill-every 1000
    --rss-bound 4096)
else()
  set(cqw_soak_short_args --short)
endif()
foreach(b IN LISTS cqw_test_backends)
  add_test(NAME soak-short-${b} COMMAND soak ${cqw_soak_short_args})
  set_tests_properties(soak-short-${b} PROPERTIES TIMEOUT 600
    SKIP_RETURN_CODE 77 ENVIRONMENT "CQW_BACKEND=${b}")
endforeach()

# The checks must be able to fail: peers told to drop, duplicate, corrupt,
# cut or reorder one message each must make the run fail with that count.
foreach(f drop:lost dup:duplicated corrupt:torn truncate:torn
    reorder:reordered)
  string(REPLACE ":" ";" f "${f}")
  list(GET f 0 fault)
  list(GET f 1 field)
  add_test(NAME soak-fault-${fault} COMMAND soak --short --conns 8
    --messages 20000 --kill-every 0 --fault ${fault} --json)
  set_tests_properties(soak-fault-${fault} PROPERTIES TIMEOUT 300
    SKIP_RETURN_CODE 77 ENVIRONMENT "CQW_BACKEND=poll"
    PASS_REGULAR_EXPRESSION "\"ok\": false.*\"${field}\": [1-9]")
endforeach()
