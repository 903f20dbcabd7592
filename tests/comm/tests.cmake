# Multi-rank tests (expert parallelism): MPI gtest binaries with their own main, run through
# mpirun at 2, 3 and 4 ranks, and fault tests whose mpirun must fail with a clear message.
set(moe_mpirun ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1)
if(MOE_SANITIZE)
  # Open MPI itself leaks at MPI_Finalize (its dlopen'ed components cannot be suppressed by
  # name): keep ASan/UBSan on for these processes, leak detection off.
  list(APPEND moe_mpirun -x ASAN_OPTIONS=detect_leaks=0)
endif()

# moe_mpi_test(NAME SOURCE RANKS...): one executable, one ctest entry per rank count.
function(moe_mpi_test name src)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE moe_test_support GTest::gtest)
  foreach(np ${ARGN})
    add_test(NAME ${name}_np${np} COMMAND ${moe_mpirun} -np ${np} $<TARGET_FILE:${name}>)
    set_tests_properties(${name}_np${np} PROPERTIES LABELS mpi TIMEOUT 300 RUN_SERIAL TRUE)
  endforeach()
endfunction()

moe_mpi_test(communicator_mpi ${CMAKE_CURRENT_LIST_DIR}/communicator_mpi_main.cc 2 3 4)
moe_mpi_test(dispatcher_mpi ${CMAKE_CURRENT_LIST_DIR}/dispatcher_mpi_main.cc 2 3 4)
moe_mpi_test(ep_layer_mpi ${CMAKE_CURRENT_LIST_DIR}/../moe/ep_layer_mpi_main.cc 2 3 4)

# Faults: rank 1 of 3 stalls or dies before the dispatch or the combine; timeouts are 3 s.
# A stalled rank: the survivors time out, print "error: rank R: no data from rank 1 within
# 3 s (CALL)" and exit 1, and mpirun then ends the job with a non-zero status.
# A dead rank: by default Open MPI's mpirun kills the whole job at once and names the rank
# ("mpirun noticed that process rank 1 ... exited on signal 9"); under --enable-recovery the
# job goes on, and the survivors' timeouts report it as for a stall (mpirun then exits 0, so
# only the message is checked).
add_executable(ep_fault ${CMAKE_CURRENT_LIST_DIR}/ep_fault_main.cc)
target_link_libraries(ep_fault PRIVATE moe_test_support)
set(moe_expect_failure ${CMAKE_CURRENT_LIST_DIR}/expect_failure.sh)
set(moe_survivor "error: rank [02]: no data from rank 1 within 3 s")
set(moe_fault_tests
    "stall_before_dispatch\;nonzero\;${moe_survivor} \\(AllGather\\)\;"
    "stall_before_combine\;nonzero\;${moe_survivor} \\(AllToAllV\\)\;"
    "kill_before_dispatch\;nonzero\;process rank 1 .*exited on signal 9\;"
    "kill_before_combine\;nonzero\;process rank 1 .*exited on signal 9\;"
    "kill_before_combine\;any\;${moe_survivor} \\(AllToAllV\\)\;--enable-recovery")
foreach(entry ${moe_fault_tests})
  list(GET entry 0 mode)
  list(GET entry 1 status)
  list(GET entry 2 pattern)
  list(GET entry 3 extra)
  set(name ep_fault_${mode})
  if(extra)
    set(name ${name}_recovery)
  endif()
  add_test(NAME ${name} COMMAND ${moe_expect_failure} ${status} ${pattern} ${moe_mpirun} ${extra}
                                -np 3 $<TARGET_FILE:ep_fault> ${mode})
  set_tests_properties(${name} PROPERTIES LABELS mpi TIMEOUT 60 RUN_SERIAL TRUE)
endforeach()

# NCCL across 2 ranks: skips (with the reason) unless each rank has its own CUDA device.
moe_mpi_test(nccl_mpi ${CMAKE_CURRENT_LIST_DIR}/nccl_mpi_main.cc 2)
