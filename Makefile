# posixkit: every target is listed by `make help` (the default).
CARGO   ?= cargo
RELEASE := target/release
DEMOS   := fork ticket

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

run-ticket: build ## pk-ticket: 10 buyers race for 3 tickets, without then with flock(2)
	@echo '== pk-ticket: without a lock the shop oversells (--no-lock --yield)'
	$(RELEASE)/pk-ticket init target/product 3
	$(RELEASE)/pk-ticket rush target/product --buyers 10 --no-lock --yield
	@echo '== pk-ticket: with flock(2) exactly the stock is sold'
	$(RELEASE)/pk-ticket init target/product 3
	$(RELEASE)/pk-ticket rush target/product --buyers 10 --yield
	$(RELEASE)/pk-ticket buy target/product; echo "exit status $$?"
	bash scripts/ticket-rush.sh 100 37
