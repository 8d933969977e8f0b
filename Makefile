# The benchmark commands (see the README, "Performance"). Extra flags: ARGS="...",
# e.g. `make bench ARGS="--rounds 5 --seconds 5"` or `make memory ARGS="--tokens 100000"`.
ARGS ?=

.PHONY: bench bench-hit memory

bench: ## no filter / empty wasm / cache hit / jwt_authn / cache miss / 64 concurrent; ~3 min
	scripts/bench.sh $(ARGS)

bench-hit: ## the cache hit alone: a long interleaved run, ratios with 95% intervals; ~2 min
	scripts/bench.sh --hit $(ARGS)

memory: ## one million distinct tokens through the filter, Envoy RSS before/during/after; ~4 min
	scripts/memory.sh $(ARGS)
