# The command-line tests run the built `moe` binary (MOE_BINARY_DIR/bin/moe).
foreach(t moe_cli_test moe_run_test)
  if(TARGET ${t})
    add_dependencies(${t} moe)
  endif()
endforeach()

# The #wrong check of `moe bench` lives in tools/ (an executable's sources): compile it in.
if(TARGET bench_check_test)
  target_sources(bench_check_test PRIVATE ${CMAKE_SOURCE_DIR}/tools/bench_check.cc)
endif()
