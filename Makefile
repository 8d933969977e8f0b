# The benchmark command (see the README, "Performance"). Extra flags: ARGS="...",
# e.g. `make bench ARGS="--rounds 5 --seconds 5"`.
ARGS ?=

.PHONY: bench

bench: ## no filter / empty wasm / cache hit / jwt_authn / cache miss / 64 concurrent; ~3 min
	scripts/bench.sh $(ARGS)
