# Run at every build (tools/CMakeLists.txt, target moe_git_commit): writes OUT with the commit
# `moe` reports, the short HEAD of SRC with "-dirty" when tracked files differ from it
# ("unknown" without git or outside a checkout), and only when that changes, so that
# bench_report.cc is recompiled only then.
set(commit "unknown")
if(GIT)
  execute_process(COMMAND "${GIT}" rev-parse --short HEAD
                  WORKING_DIRECTORY "${SRC}"
                  OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE result ERROR_QUIET)
  if(result EQUAL 0 AND head)
    set(commit "${head}")
    execute_process(COMMAND "${GIT}" status --porcelain --untracked-files=no
                    WORKING_DIRECTORY "${SRC}"
                    OUTPUT_VARIABLE changes OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(changes)
      set(commit "${commit}-dirty")
    endif()
  endif()
endif()
set(line "#define MOE_GIT_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL line)
  file(WRITE "${OUT}" "${line}")
endif()
