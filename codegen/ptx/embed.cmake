# codegen/ptx/embed.cmake — the build runs this (cmake -P) to turn qgemm_template.cu into
# a C file defining kiln_ptx_template, written to the build dir: the .cu stays the only
# copy in the source tree, and the build never writes there.
# Usage: cmake -DIN=<qgemm_template.cu> -DOUT=<qgemm_template.c> [-DNAME=<C name>] -P embed.cmake
# (NAME defaults to kiln_ptx_template; ir/layout_gpu_int4.h is embedded the same way.)
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "embed.cmake: pass -DIN=<file.cu> -DOUT=<file.c>")
endif()
if(NOT NAME)
  set(NAME kiln_ptx_template)
endif()
file(READ "${IN}" body)
# Escapes a C string literal needs; "??" too, because -std=c17 turns trigraphs on.
string(REPLACE "\\" "\\\\" body "${body}")
string(REPLACE "\"" "\\\"" body "${body}")
string(REPLACE "??" "?\\?" body "${body}")
string(REPLACE "\r" "\\r" body "${body}")
# One literal per source line, so compiler errors and diffs stay readable.
string(REPLACE "\n" "\\n\"\n    \"" body "${body}")
set(text "/* GENERATED at build time by codegen/ptx/embed.cmake from ${IN}; do not edit. */\n")
string(APPEND text "const char ${NAME}[] =\n    \"${body}\";\n")
# Write through a temp file so an interrupted build never leaves half a file behind.
file(WRITE "${OUT}.tmp" "${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
