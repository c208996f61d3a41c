# tests/fuzz/fuzz.mk — builds the libFuzzer targets with clang-14 (ASan + UBSan +
# libFuzzer coverage) into $(OUT). Run from the repository root through
# scripts/fuzz.sh; objects are rebuilt when a source or a header they include changes.
OUT ?= build-fuzz
CC := clang-14
CFLAGS := -std=c17 -D_GNU_SOURCE -DKILN_VERSION=\"fuzz\" -g -O1 -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter \
  -I. -Iinclude $(shell pkg-config --cflags lua5.4 libffi libpcre2-8) \
  -DKILN_RECIPE_INSTR_LIMIT=200000L -DKILN_RECIPE_MEM_LIMIT='(8u << 20)' -DKILN_RECIPE_TIME_MS=1000
# (smaller recipe budgets than the library's: a runaway recipe costs milliseconds, and
# one that outlives fuzz.sh's 3 s per input escaped them)
LIBS := $(shell pkg-config --libs lua5.4 libffi libpcre2-8) -lm -lpthread -ldl

# Every reader the targets reach; runtime/aot.c is compiled into its harness instead.
LIBSRC := $(wildcard ir/*.c frontend/*.c passes/*.c) runtime/json.c runtime/json_doc.c runtime/ffi.c runtime/aot_layout.c \
  runtime/json_write.c runtime/files.c \
  model/files/modelfile.c model/files/safetensors.c model/files/gguf.c model/nets/shapes.c \
  model/tokenizers/tokenizer.c model/tokenizers/tokenizer_bpe.c \
  model/tokenizers/tokenizer_wordpiece.c model/tokenizers/unicode.c \
  $(addprefix model/checkpoints/,checkpoint.c ckpt_read.c ckpt_ct.c ckpt_regex.c ckpt_layouts.c ckpt_write.c \
  ckpt_config.c ckpt_qk.c)
LIBOBJ := $(patsubst %.c,$(OUT)/obj/%.o,$(LIBSRC))
TARGETS := $(addprefix $(OUT)/fuzz_,recipe ir_parse safetensors gguf aot_manifest ckpt_config)

all: $(TARGETS)

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

# clang-14's __builtin_cpu_supports knows no "f16c": passes/target.c (host ISA detection,
# targets by name, nothing that reads input) is built by cc, without instrumentation.
$(OUT)/obj/passes/target.o: passes/target.c
	@mkdir -p $(dir $@)
	cc -std=c17 -D_GNU_SOURCE -O1 -g -I. -Iinclude -MMD -MP -c $< -o $@

$(OUT)/libkiln_fuzz.a: $(LIBOBJ)
	rm -f $@
	ar rcs $@ $^

# name, harness source, extra flags
define target
$(OUT)/fuzz_$(1): $(2) $(OUT)/libkiln_fuzz.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(3) -MMD -MP $(2) $(OUT)/libkiln_fuzz.a $(LIBS) -o $$@
endef
$(eval $(call target,recipe,tests/fuzz/fuzz_recipe.c,))
$(eval $(call target,ir_parse,tests/fuzz/fuzz_ir_parse.c,))
$(eval $(call target,safetensors,tests/fuzz/fuzz_modelfile.c,-DKILN_FUZZ_SAFETENSORS))
$(eval $(call target,gguf,tests/fuzz/fuzz_modelfile.c,-DKILN_FUZZ_GGUF))
$(eval $(call target,aot_manifest,tests/fuzz/fuzz_aot_manifest.c,))
$(eval $(call target,ckpt_config,tests/fuzz/fuzz_ckpt_config.c,))

-include $(LIBOBJ:.o=.d) $(TARGETS:=.d)
.PHONY: all
