# codegen/ptx/embed.cmake — the build runs this (cmake -P) to turn a CUDA source
# (codegen/ptx/qgemm_template.cu, qgemm_wgmma.cu, wgmma_layout.h, gemv_int4.cu, and
# ir/layout_gpu_int4.h) into a C file defining the string VAR (default
# kiln_ptx_template), written to the build dir: the source stays the only copy in the
# source tree, and the build never writes there.
# Usage: cmake -DIN=<file> -DOUT=<file.c> [-DVAR=<name>] [-DSRC=<path named in the header>] -P embed.cmake
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "embed.cmake: pass -DIN=<file.cu> -DOUT=<file.c>")
endif()
if(NOT VAR)
  set(VAR kiln_ptx_template)
endif()
file(READ "${IN}" body)
# Escapes a C string literal needs; "??" too, because -std=c17 turns trigraphs on.
string(REPLACE "\\" "\\\\" body "${body}")
string(REPLACE "\"" "\\\"" body "${body}")
string(REPLACE "??" "?\\?" body "${body}")
string(REPLACE "\r" "\\r" body "${body}")
# One literal per source line, so compiler errors and diffs stay readable.
string(REPLACE "\n" "\\n\"\n    \"" body "${body}")
if(NOT SRC)
  get_filename_component(src "${IN}" NAME)
  set(SRC "codegen/ptx/${src}")
endif()
set(text "/* GENERATED at build time by codegen/ptx/embed.cmake from ${SRC}; do not edit. */\n")
string(APPEND text "const char ${VAR}[] =\n    \"${body}\";\n")
# Write through a temp file so an interrupted build never leaves half a file behind.
file(WRITE "${OUT}.tmp" "${text}")
file(RENAME "${OUT}.tmp" "${OUT}")
