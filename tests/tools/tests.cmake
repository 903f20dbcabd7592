# The command-line tests run the built `moe` binary (MOE_BINARY_DIR/bin/moe).
foreach(t moe_cli_test moe_run_test bench_profile_test plot_bench_test)
  if(TARGET ${t})
    add_dependencies(${t} moe)
  endif()
endforeach()

# The #wrong check and the sweep grids of `moe bench` live in tools/ (an executable's
# sources): compile them in.
if(TARGET bench_check_test)
  target_sources(bench_check_test PRIVATE ${CMAKE_SOURCE_DIR}/tools/bench_check.cc)
endif()
if(TARGET bench_sweep_test)
  target_sources(bench_sweep_test PRIVATE ${CMAKE_SOURCE_DIR}/tools/bench_sweep.cc)
endif()

# tools/plot_bench.py needs matplotlib: the system python3 (Debian's python3-matplotlib), not
# whichever python3 comes first on PATH (pyenv, a venv).
if(TARGET plot_bench_test)
  find_program(MOE_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT MOE_PYTHON3)
    find_package(Python3 COMPONENTS Interpreter)
    set(MOE_PYTHON3 "${Python3_EXECUTABLE}")
  endif()
  target_compile_definitions(plot_bench_test PRIVATE MOE_PYTHON3="${MOE_PYTHON3}")
endif()

# `moe bench --ep` / `moe run --ep` under mpirun: launch hint, EP columns, bitwise run output at
# 2 and 3 ranks, rebalancing under zipf skew.
if(MPIEXEC_EXECUTABLE)
  set(moe_ep_cli_mpirun ${MPIEXEC_EXECUTABLE})
  if(MOE_SANITIZE)
    # Open MPI leaks in its own components at MPI_Finalize: leak detection off for these runs
    # (see tests/comm/tests.cmake), ASan/UBSan stay on.
    list(APPEND moe_ep_cli_mpirun -x ASAN_OPTIONS=detect_leaks=0)
  endif()
  add_test(NAME moe_ep_cli_test COMMAND ${CMAKE_CURRENT_LIST_DIR}/ep_cli_test.sh
                                        $<TARGET_FILE:moe> ${moe_ep_cli_mpirun})
  set_tests_properties(moe_ep_cli_test PROPERTIES LABELS mpi RUN_SERIAL TRUE TIMEOUT 300
                                                  PASS_REGULAR_EXPRESSION "PASS")
  if(MOE_SANITIZE)
    set_tests_properties(moe_ep_cli_test PROPERTIES ENVIRONMENT ASAN_OPTIONS=detect_leaks=0)
  endif()
endif()

# The Google Benchmark binaries start and run a row (no timing is judged): one short row each.
# A CPU without AVX-512 or AMX reports those rows as skipped, which passes too.
if(TARGET moe_kernel_bench)
  add_test(NAME moe_kernel_bench_smoke
           COMMAND $<TARGET_FILE:moe_kernel_bench> --benchmark_filter=BM_PackedGemm/1/16$
                   --benchmark_min_time=0.01)
  set_tests_properties(moe_kernel_bench_smoke PROPERTIES LABELS bench TIMEOUT 120
                                                         PASS_REGULAR_EXPRESSION "GFLOP/s=")
endif()
if(TARGET moe_overlap_bench)
  add_test(NAME moe_overlap_bench_smoke
           COMMAND $<TARGET_FILE:moe_overlap_bench> --benchmark_filter=BM_Overlap/[01]/1/1/
                   --benchmark_min_time=0.01)
  set_tests_properties(moe_overlap_bench_smoke PROPERTIES
                       LABELS bench TIMEOUT 120
                       PASS_REGULAR_EXPRESSION "hidden=|no AMX on this CPU|no AVX-512 on this CPU")
endif()
if(TARGET moe_cold_gemm_bench)
  add_test(NAME moe_cold_gemm_bench_smoke
           COMMAND $<TARGET_FILE:moe_cold_gemm_bench>
                   --benchmark_filter=BM_ColdGemm/fmt:0/m:16/n:2048/k:1024/impl:[01]/
                   --benchmark_min_time=0.01)
  set_tests_properties(moe_cold_gemm_bench_smoke PROPERTIES
                       LABELS bench TIMEOUT 300
                       PASS_REGULAR_EXPRESSION "pct_roof=.*pct_roof=|pct_roof=.*oneDNN")
endif()
