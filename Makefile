# posixkit: every target is listed by `make help` (the default).
CARGO   ?= cargo
RELEASE := target/release
DEMOS   := fork pipe spawn

.DEFAULT_GOAL := help
.PHONY: help build test lint fmt doc run $(addprefix run-,$(DEMOS))

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build the library and every pk-* binary (release)
	$(CARGO) build --release --locked --bins

test: lint ## lint, then the whole test suite
	$(CARGO) test --locked

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: ## format the code in place
	$(CARGO) fmt --all

doc: ## build the API documentation (target/doc/posixkit/index.html)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --document-private-items

run: build ## build, then run every primitive's demo in turn
	@for m in $(DEMOS); do $(MAKE) --no-print-directory run-$$m || exit $$?; done

run-fork: build ## pk-fork: fork, _exit, waitpid, signals, copy-on-write
	@echo '== pk-fork: one child, then WEXITSTATUS, WTERMSIG and --propagate'
	$(RELEASE)/pk-fork
	$(RELEASE)/pk-fork --exit-code 3
	$(RELEASE)/pk-fork --signal KILL
	$(RELEASE)/pk-fork --children 3 --quiet
	bash scripts/fork-status.sh

run-pipe: build ## pk-pipe: many writers one pipe, socketpair duplex, SIGPIPE
	@echo '== pk-pipe: 5 writers into one pipe, then ping-pong, then a reader that leaves'
	$(RELEASE)/pk-pipe fan-in
	$(RELEASE)/pk-pipe fan-in --writers 16 --messages 10000 --size 4096 --quiet
	$(RELEASE)/pk-pipe duplex --rounds 3
	$(RELEASE)/pk-pipe sigpipe
	$(RELEASE)/pk-pipe sigpipe --ignore

run-spawn: build ## pk-spawn: fork + dup2 + exec, stdin bytes, captured output, status
	@echo '== pk-spawn: call, communicate(input), statuses 126/127/128+N'
	$(RELEASE)/pk-spawn -- echo hello from a child
	$(RELEASE)/pk-spawn --input 'hello' --capture -- sh -c 'tr a-z A-Z; echo to stderr >&2'
	$(RELEASE)/pk-spawn -- sh -c 'exit 3' || echo "pk-spawn exited $$?"
	$(RELEASE)/pk-spawn -- no-such-command || echo "pk-spawn exited $$?"
	bash scripts/spawn-status.sh
