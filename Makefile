# posixkit: every target is listed by `make help` (the default).
CARGO   ?= cargo
RELEASE := target/release
DEMOS   := fork threads lock event local

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

run-threads: build ## pk-threads: a named thread and join; daemon vs joined threads
	@echo '== pk-threads: LoopThread counts while main joins; a daemon is cut off, a joined thread waited for'
	$(RELEASE)/pk-threads loop
	$(RELEASE)/pk-threads daemon --daemon --work 2s
	$(RELEASE)/pk-threads daemon --no-daemon --work 500ms

run-lock: build ## pk-lock: the balance race, ten buyers for three tickets, a==b
	@echo '== pk-lock: the balance keeps 0 only with the lock; exactly 3 tickets sold'
	$(RELEASE)/pk-lock balance
	$(RELEASE)/pk-lock balance --no-lock --yield
	$(RELEASE)/pk-lock tickets --threads 10 --stock 3
	$(RELEASE)/pk-lock tickets --threads 10 --stock 3 --no-lock --yield --quiet
	$(RELEASE)/pk-lock invariant --seconds 0.5
	$(RELEASE)/pk-lock invariant --seconds 0.5 --no-lock --yield --show 3

run-event: build ## pk-event: one thread waits for another's password on an Event
	@echo '== pk-event: the waiter prints only after the set; then a wait that times out (exit 1)'
	$(RELEASE)/pk-event --delay 500ms
	$(RELEASE)/pk-event --timeout 300ms --no-set || echo "exit status $$?"

run-local: build ## pk-local: a thread-local keeps Alice and Bob apart
	@echo '== pk-local: one thread-local slot, each thread sees its own name'
	$(RELEASE)/pk-local
	$(RELEASE)/pk-local --names Ann,Ben,Cy
