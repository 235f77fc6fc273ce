# Top-level convenience targets.

.PHONY: fuzz-parser

# libFuzzer run of the SIP parser (clang needed); FUZZ_TIME seconds, default 60
fuzz-parser:
	$(MAKE) -C native/fuzz fuzz FUZZ_TIME=$(or $(FUZZ_TIME),60)
