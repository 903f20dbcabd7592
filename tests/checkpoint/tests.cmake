# Fuzzes the safetensors header parser for 20 s (builds it with clang++ and libFuzzer, installing
# them through tools/setup.sh when missing). Label: fuzz (`ctest -L fuzz`, or `-LE fuzz` to skip).
add_test(NAME safetensors_header_fuzz_run
         COMMAND ${CMAKE_SOURCE_DIR}/tools/fuzz/run_fuzz_test.sh ${CMAKE_BINARY_DIR}/fuzz 20)
set_tests_properties(safetensors_header_fuzz_run PROPERTIES LABELS fuzz TIMEOUT 600)
