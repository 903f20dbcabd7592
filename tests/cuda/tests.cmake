# tests/cuda: the CUDA backend's tests. With the toolkit, every tests/cuda/*_test.cc executable
# links the CUDA layer and kernels (moe_cuda); without it they build as skipping stubs.
set(moe_gpu_test_targets cuda_ops_test cuda_routing_test cuda_layer_test grouped_gemm_sm90_test)
file(GLOB moe_cuda_test_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*_test.cc)
foreach(src ${moe_cuda_test_srcs})
  get_filename_component(name ${src} NAME_WE)
  if(TARGET moe_cuda AND TARGET ${name})
    target_link_libraries(${name} PRIVATE moe_cuda)
  endif()
endforeach()

# The `gpu` label on every test of the executables above (`ctest -L gpu`; tools/gpu_check.sh).
# gtest_discover_tests registers tests at ctest time and leaves their names in <target>_TESTS;
# this include file runs after those (TEST_INCLUDE_FILES keeps the order) and labels them.
set(moe_gpu_label_script ${CMAKE_CURRENT_BINARY_DIR}/cuda_gpu_labels.cmake)
set(moe_gpu_label_text "")
foreach(t ${moe_gpu_test_targets})
  if(TARGET ${t})
    string(APPEND moe_gpu_label_text
           "if(${t}_TESTS)\n  set_tests_properties(\${${t}_TESTS} PROPERTIES LABELS gpu)\nendif()\n")
  endif()
endforeach()
file(GENERATE OUTPUT ${moe_gpu_label_script} CONTENT "${moe_gpu_label_text}")
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${moe_gpu_label_script})

# `moe --backend` errors run the built binary.
if(TARGET cuda_cli_test)
  add_dependencies(cuda_cli_test moe)
endif()

# tools/gpu_check.sh (the one-call GPU verification) must at least parse.
add_test(NAME gpu_check_script_parses COMMAND bash -n ${CMAKE_SOURCE_DIR}/tools/gpu_check.sh)
set_tests_properties(gpu_check_script_parses PROPERTIES LABELS style TIMEOUT 30)
