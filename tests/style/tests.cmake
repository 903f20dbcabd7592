# STYLE.md: every tracked source is clang-formatted (.clang-format at the root).
add_test(NAME clang_format_check COMMAND ${CMAKE_SOURCE_DIR}/tools/check_format.sh)
set_tests_properties(clang_format_check PROPERTIES LABELS style TIMEOUT 120)
