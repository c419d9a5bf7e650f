# Compiles one source with the flags of the forge::forge target and checks the outcome.
#   -DCOMPILER=...        the C++ compiler
#   -DFLAGS=...           a file setting CHECK_INCLUDES and CHECK_DEFINES (generated)
#   -DSOURCE=...          the source to compile (-fsyntax-only)
#   -DMODE=fail|pass      fail: compilation must fail AND print every EXPECT pattern, and the
#                         source's allowed twin (-DFORGE_ALLOWED_VARIANT) must compile;
#                         pass: compilation must succeed
#   -DEXPECT=a|b          regular expressions the compiler output must contain (| separated
#                         because ; would split the argument list)
include(${FLAGS})
set(args -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic)
# The compiler's own system directories stay implicit: -I/usr/include would reorder them
# and break the standard library's #include_next chains.
foreach(dir ${CHECK_INCLUDES})
  if(dir AND NOT dir STREQUAL "/usr/include" AND NOT dir STREQUAL "/usr/local/include")
    list(APPEND args "-I${dir}")
  endif()
endforeach()
foreach(def ${CHECK_DEFINES})
  list(APPEND args "-D${def}")
endforeach()
foreach(dir ${EXTRA_INCLUDES})
  list(APPEND args "-I${dir}")
endforeach()

function(compile out_rc out_text)
  execute_process(COMMAND ${COMPILER} ${args} ${ARGN} ${SOURCE}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE text ERROR_VARIABLE text)
  set(${out_rc} ${rc} PARENT_SCOPE)
  set(${out_text} "${text}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "pass")
  compile(rc text)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "expected ${SOURCE} to compile, but it failed:\n${text}")
  endif()
  message(STATUS "compiled as expected: ${SOURCE}")
elseif(MODE STREQUAL "fail")
  compile(rc text)
  if(rc EQUAL 0)
    message(FATAL_ERROR "expected ${SOURCE} to fail to compile, but it compiled:\n${text}")
  endif()
  string(REPLACE "|" ";" patterns "${EXPECT}")
  foreach(p ${patterns})
    if(NOT text MATCHES "${p}")
      message(FATAL_ERROR "compilation of ${SOURCE} failed, but its output lacks '${p}':\n${text}")
    endif()
  endforeach()
  # The twin with the violation removed must compile, so the failure above is the rule's.
  compile(twin_rc twin_text -DFORGE_ALLOWED_VARIANT)
  if(NOT twin_rc EQUAL 0)
    message(FATAL_ERROR "the allowed twin of ${SOURCE} (-DFORGE_ALLOWED_VARIANT) must compile:\n${twin_text}")
  endif()
  message(STATUS "failed as expected with the intended message: ${SOURCE}")
else()
  message(FATAL_ERROR "MODE must be fail or pass")
endif()
