# posixkit: every target is listed by `make help` (the default).
CARGO   ?= cargo
RELEASE := target/release
DEMOS   := fork spawn pipe queue shm sem ticket threads lock event local process pool coro manager

# make install: where, and what. pk-bench and pk-bench-plot stay out: they are the engine of
# `make bench`, whose table also needs bench/python and scripts/bench.sh
# from this tree, and it measures posixkit rather than serving scripts.
PREFIX  ?= /usr/local
DESTDIR ?=
INSTALL ?= install
STRIP   ?= strip
TOOLS   := $(filter-out pk-bench pk-bench-plot,$(basename $(notdir $(wildcard src/bin/pk-*.rs))))
bindir      = $(PREFIX)/bin
man1dir     = $(PREFIX)/share/man/man1
bashcompdir = $(PREFIX)/share/bash-completion/completions
zshcompdir  = $(PREFIX)/share/zsh/site-functions
fishcompdir = $(PREFIX)/share/fish/vendor_completions.d

.DEFAULT_GOAL := help
.PHONY: help build test prereqs lint fmt doc readme examples bench bench-quick bench-plot bench-plot-quick install install-files uninstall run $(addprefix run-,$(DEMOS))
# One target at a time, in the order given: `make run` builds once, then
# runs the demos one after the other even under make -j.
.NOTPARALLEL:

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build the library and every pk-* binary (release)
	$(CARGO) build --release --locked --bins

# A suite started as a background job of a non-interactive shell (`make
# test &` in a script) inherits SIGINT and SIGQUIT ignored, and the tests
# of ^C need them at their default action: env(1) puts them back.
DEFAULT_SIGNALS := $(shell env --default-signal=INT true 2>/dev/null && echo env --default-signal=INT,QUIT)

test: prereqs lint doc ## lint, the API docs (warnings are errors), then the whole test suite
	$(DEFAULT_SIGNALS) $(CARGO) test --locked
	$(CARGO) test --locked --lib --no-default-features
	bash scripts/check-lib-deps.sh
	$(MAKE) --no-print-directory examples

prereqs: ## say in one line which tools the tests drive are missing (scripts/ci-deps.sh installs them)
	@bash scripts/check-prereqs.sh

install: build install-files ## install the pk-* binaries (stripped), man pages and bash/zsh/fish completions in PREFIX=/usr/local (DESTDIR honoured)

install-files: ## make install without the build: install what target/release holds
	@$(INSTALL) -d $(DESTDIR)$(bindir) $(DESTDIR)$(man1dir) $(DESTDIR)$(bashcompdir) $(DESTDIR)$(zshcompdir) $(DESTDIR)$(fishcompdir)
	@$(INSTALL) -m 0755 -s --strip-program=$(STRIP) $(addprefix $(RELEASE)/,$(TOOLS)) $(DESTDIR)$(bindir)
	@stage=$$(mktemp -d) && trap 'rm -rf "$$stage"' EXIT && set -e && \
	for t in $(TOOLS); do \
	  $(RELEASE)/$$t --generate-man "$$stage/man"; \
	  $(RELEASE)/$$t --generate-completions bash > "$$stage/$$t.bash"; \
	  $(RELEASE)/$$t --generate-completions zsh > "$$stage/_$$t"; \
	  $(RELEASE)/$$t --generate-completions fish > "$$stage/$$t.fish"; \
	  $(INSTALL) -m 0644 -T "$$stage/$$t.bash" $(DESTDIR)$(bashcompdir)/$$t; \
	  $(INSTALL) -m 0644 "$$stage/_$$t" $(DESTDIR)$(zshcompdir); \
	  $(INSTALL) -m 0644 "$$stage/$$t.fish" $(DESTDIR)$(fishcompdir); \
	done; \
	$(INSTALL) -m 0644 "$$stage"/man/*.1 $(DESTDIR)$(man1dir); \
	echo "installed $(words $(TOOLS)) pk-* binaries in $(DESTDIR)$(bindir)"; \
	echo "  $$(ls "$$stage/man" | wc -l) man pages in $(DESTDIR)$(man1dir)"; \
	echo "  completions in $(DESTDIR)$(bashcompdir), $(DESTDIR)$(zshcompdir), $(DESTDIR)$(fishcompdir)"

uninstall: ## remove what make install put in PREFIX (give the same PREFIX and DESTDIR)
	@n=0; for f in $(addprefix $(DESTDIR)$(bindir)/,$(TOOLS)) \
	  $(addprefix $(DESTDIR)$(bashcompdir)/,$(TOOLS)) \
	  $(addprefix $(DESTDIR)$(zshcompdir)/_,$(TOOLS)) \
	  $(addprefix $(DESTDIR)$(fishcompdir)/,$(addsuffix .fish,$(TOOLS))) \
	  $(foreach t,$(TOOLS),$(DESTDIR)$(man1dir)/$(t).1 $(wildcard $(DESTDIR)$(man1dir)/$(t)-*.1)); do \
	  if [ -e "$$f" ] || [ -L "$$f" ]; then rm -f "$$f" && n=$$((n + 1)) || exit 1; fi; \
	done; echo "removed $$n files from $(DESTDIR)$(PREFIX)"

examples: ## build and run every program in examples/ on the library alone (no default features); each checks its own results
	@for e in examples/*.rs; do n=$$(basename $$e .rs); \
	  if out=$$(timeout 120 $(CARGO) run --locked --quiet --no-default-features --example $$n 2>&1); \
	  then echo "example $$n: ok"; \
	  else printf '%s\n' "$$out"; echo "example $$n failed" >&2; exit 1; fi; done

readme: ## write every binary's --help into README.md's sections (a test fails when they differ)
	PK_UPDATE_README=1 $(CARGO) test --locked --quiet --test cli readme::

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --lib --no-default-features -- -D warnings

fmt: ## format the code in place
	$(CARGO) fmt --all

doc: ## build the API documentation (target/doc/posixkit/index.html)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --document-private-items

bench: build ## time every primitive: posixkit, Python and (if present) the C limit, one table
	bash scripts/bench.sh

bench-quick: build ## a smoke run of make bench, under a minute (figures not to quote)
	bash scripts/bench.sh --quick

bench-plot: build ## make bench, then each cost against the size of the work: one SVG per curve and index.html in target/bench-plots (BENCH_PLOTS=dir)
	bash scripts/bench.sh --plot

bench-plot-quick: build ## a smoke run of the curves alone (no table), into target/bench-plots
	bash scripts/bench.sh --quick --curves-only

run: build $(addprefix run-,$(DEMOS)) ## build once, then run every primitive's demo in turn

run-fork: build ## pk-fork: fork, _exit, sys.exit("message"), waitpid, signals, copy-on-write
	@echo '== pk-fork: one child, then WEXITSTATUS (os._exit(3), sys.exit("no more tickets")), WTERMSIG and --propagate'
	$(RELEASE)/pk-fork
	$(RELEASE)/pk-fork --exit-code 3
	$(RELEASE)/pk-fork --quiet --exit-message 'no more tickets'
	$(RELEASE)/pk-fork --signal KILL
	$(RELEASE)/pk-fork --children 3 --quiet
	bash scripts/fork-status.sh

run-process: build ## pk-process: Process name/pid/is_alive/join/terminate/kill/exitcode; daemon=True against die_with_parent; join_children
	@echo '== pk-process: multiprocessing.Process; a daemon outlives a SIGKILLed parent, a die_with_parent child does not; a normal exit terminates daemons and joins the rest'
	$(RELEASE)/pk-process
	@echo '== pk-process --die-with-parent: the same Daemon, started with die_with_parent too, dies with its parent'
	$(RELEASE)/pk-process --die-with-parent > target/pk-process.out && sed -n '8,10p' target/pk-process.out

run-pool: build ## pk-pool: the lesson's apply_async of long tasks; apply, map_async, imap, imap_unordered, starmap, callbacks; a dead worker replaced
	@echo '== pk-pool: multiprocessing.Pool on pre-forked workers'
	$(RELEASE)/pk-pool demo --workers 4 --tasks 5 --task-time 1s
	$(RELEASE)/pk-pool demo --workers 5 --tasks 5 --task-time 200ms --reverse
	$(RELEASE)/pk-pool calls --workers 4 --task-time 100ms
	$(RELEASE)/pk-pool map --workers 2 1 2 3 4 5
	@echo '-- a worker killed on purpose (SIGKILL): its task is reported lost, the worker replaced'
	$(RELEASE)/pk-pool demo --workers 2 --tasks 6 --task-time 100ms --kill-a-worker
	printf '%s\n' one two three | $(RELEASE)/pk-pool exec -j 2 -k -- echo exec got {}
	seq 5 | $(RELEASE)/pk-pool exec -k -n 2 --joblog target/exec.joblog -- echo pair; cat target/exec.joblog
	printf '%s\n' 0 5 3 | $(RELEASE)/pk-pool exec -j 1 -- sh -c 'exit $$0' || echo "pk-pool exec exited $$?"

run-coro: build ## pk-coro: generators (send/close), asyncio (gather, wait_for, Queue), tasks taking turns on one thread
	@echo '== pk-coro: the generator protocol, a coroutine never run, ask/answer, timing, gather, wait_for, a queue, a lock-free ticket rush, a blocking call'
	$(RELEASE)/pk-coro generator --items 5
	$(RELEASE)/pk-coro never-run --scale 0.1
	$(RELEASE)/pk-coro ask-answer --rounds 3
	$(RELEASE)/pk-coro timing --scale 0.2
	$(RELEASE)/pk-coro gather --scale 0.1
	$(RELEASE)/pk-coro wait-for --scale 0.1
	$(RELEASE)/pk-coro queue --workers 3 --items 10 --scale 0.1
	$(RELEASE)/pk-coro tickets --tasks 10 --stock 3 --random-delay
	$(RELEASE)/pk-coro tickets --tasks 5 --stock 3 --yield-between
	$(RELEASE)/pk-coro blocking --scale 0.1
run-manager: build ## pk-manager: a master and two workers over TCP with an auth key, then named queues
	@echo '== pk-manager: a server on 127.0.0.1:0, a wrong key, two workers; then put, work -- CMD, get'
	PATH="$(CURDIR)/$(RELEASE):$$PATH" bash scripts/manager-demo.sh 6
run-shm: build ## pk-shm: Array('c', b'Hello'), a shared Value counter (no lock, a lock per access, one lock, atomic), a named segment
	@echo '== pk-shm: a child changes a shared byte array; 10 processes x 50 increments: no lock and a lock per access (v.value += 1) lose, one lock does not'
	$(RELEASE)/pk-shm bytes --text Hello
	$(RELEASE)/pk-shm counter --procs 10 --iters 50 --sync none --yield
	$(RELEASE)/pk-shm counter --procs 10 --iters 50 --sync lock-each --yield
	$(RELEASE)/pk-shm counter --procs 10 --iters 50 --sync lock
	$(RELEASE)/pk-shm counter --procs 10 --iters 50 --sync atomic
	@echo '== pk-shm: a named segment, a counter cell, bytes Python reads'
	$(RELEASE)/pk-shm create /pk-make-shm --size 4096
	for i in 1 2 3; do $(RELEASE)/pk-shm add /pk-make-shm --offset 8; done
	printf hello | $(RELEASE)/pk-shm write /pk-make-shm --offset 100
	$(RELEASE)/pk-shm read /pk-make-shm --offset 100 --len 5; echo
	$(RELEASE)/pk-shm unlink /pk-make-shm
run-sem: build ## pk-sem: Semaphore(3) with 5 workers; a self-healing named semaphore around commands
	@echo '== pk-sem: at most 3 of 5 workers at once; then 4 commands, 2 at a time'
	$(RELEASE)/pk-sem demo --workers 5 --value 3 --hold 200ms --timeline
	for i in 1 2 3 4; do $(RELEASE)/pk-sem run --name /pk-make-demo --value 2 -- sh -c "echo job $$i running; sleep 0.2" & done; wait
	$(RELEASE)/pk-sem status --name /pk-make-demo
	$(RELEASE)/pk-sem unlink --name /pk-make-demo
	@echo '== pk-sem: a holder killed with SIGKILL; its slot comes back when its command ends'
	$(RELEASE)/pk-sem run --name /pk-make-heal -- sleep 0.5 & sleep 0.2; kill -KILL $$!; \
	  $(RELEASE)/pk-sem status --name /pk-make-heal; sleep 0.5; $(RELEASE)/pk-sem status --name /pk-make-heal
	$(RELEASE)/pk-sem unlink --name /pk-make-heal
run-queue: build ## pk-queue: a bounded queue in shared memory, producers and consumers (several writers, terminate()), a named queue
	@echo '== pk-queue: full/empty/qsize, then 2 producers and 1 consumer'
	$(RELEASE)/pk-queue basics
	$(RELEASE)/pk-queue demo --producers 2 --consumers 1 --items 6 --capacity 4
	@echo '== pk-queue: the lesson: 3 writers, one reader, each put and get shown; FIFO per writer, interleaved across; the reader ended by terminate()'
	$(RELEASE)/pk-queue demo --producers 3 --consumers 1 --items 3 --trace --jitter 100ms --stop terminate
	$(RELEASE)/pk-queue demo --producers 4 --consumers 2 --items 10000 --capacity 64 --quiet
	@echo '== pk-queue: a named queue shared by independent shell commands'
	$(RELEASE)/pk-queue create /pk-make-queue --capacity 8
	$(RELEASE)/pk-queue put /pk-make-queue one 'two words'
	printf 'three\nfour\n' | $(RELEASE)/pk-queue put /pk-make-queue --lines
	$(RELEASE)/pk-queue stat /pk-make-queue
	$(RELEASE)/pk-queue get /pk-make-queue -n 4
	$(RELEASE)/pk-queue get /pk-make-queue --timeout 0 || echo "exit status $$? (expected: the queue is empty)"
	$(RELEASE)/pk-queue unlink /pk-make-queue
run-ticket: build ## pk-ticket: 10 buyers race for 3 tickets, without then with flock(2)
	@echo '== pk-ticket: without a lock the shop oversells (--no-lock --yield)'
	$(RELEASE)/pk-ticket init target/product 3
	$(RELEASE)/pk-ticket rush target/product --buyers 10 --no-lock --yield
	@echo '== pk-ticket: with flock(2) exactly the stock is sold'
	$(RELEASE)/pk-ticket init target/product 3
	$(RELEASE)/pk-ticket rush target/product --buyers 10 --yield
	$(RELEASE)/pk-ticket buy target/product; echo "exit status $$? (expected: the rush sold every ticket)"
	bash scripts/ticket-rush.sh 100 37
run-threads: build ## pk-threads: named threads and join; daemon vs joined; Thread-N names and get_ident; Timer; Queue; the GIL
	@echo '== pk-threads: LoopThread counts while main joins; a daemon is cut off, a joined thread waited for'
	$(RELEASE)/pk-threads loop
	$(RELEASE)/pk-threads daemon --daemon --work 2s
	$(RELEASE)/pk-threads daemon --no-daemon --work 500ms
	@echo '== pk-threads: Thread-N names, renames, get_ident; a Timer; a Queue joined when its work is done'
	$(RELEASE)/pk-threads names
	$(RELEASE)/pk-threads timer --interval 500ms
	$(RELEASE)/pk-threads queue --workers 3 --items 6
	@echo '== pk-threads: the GIL lesson: the same CPU-bound jobs on one thread, N threads, N processes'
	$(RELEASE)/pk-threads gil
run-lock: build ## pk-lock: the balance race, ten buyers for three tickets, a==b, a deadlock, RLock, BoundedSemaphore
	@echo '== pk-lock: the balance keeps 0 only with the lock; exactly 3 tickets sold'
	$(RELEASE)/pk-lock balance
	$(RELEASE)/pk-lock balance --no-lock --yield
	$(RELEASE)/pk-lock tickets --threads 10 --stock 3
	$(RELEASE)/pk-lock tickets --threads 10 --stock 3 --no-lock --yield --quiet
	$(RELEASE)/pk-lock invariant --seconds 0.5
	$(RELEASE)/pk-lock invariant --seconds 0.5 --no-lock --yield --show 3
	@echo '== pk-lock: two locks in opposite orders deadlock (seen by a timeout, exit 1); one order does not; RLock; BoundedSemaphore'
	$(RELEASE)/pk-lock deadlock --timeout 500ms || echo "exit status $$? (expected: the timeouts saw the deadlock)"
	$(RELEASE)/pk-lock deadlock --ordered
	$(RELEASE)/pk-lock rlock
	$(RELEASE)/pk-lock semaphore --threads 5 --value 2
run-event: build ## pk-event: one thread waits for another's password on an Event; Condition; Barrier
	@echo '== pk-event: the waiter prints only after the set; then a wait that times out (exit 1)'
	$(RELEASE)/pk-event --delay 500ms
	$(RELEASE)/pk-event --timeout 300ms --no-set || echo "exit status $$? (expected: nobody sets the event)"
	@echo '== pk-event: a Condition between a producer and two consumers; a Barrier, then one broken by a missing party'
	$(RELEASE)/pk-event condition --consumers 2 --items 6
	$(RELEASE)/pk-event barrier --parties 3 --stagger 100ms
	$(RELEASE)/pk-event barrier --parties 3 --missing --timeout 300ms || echo "exit status $$? (expected: the barrier broke)"
run-local: build ## pk-local: a thread-local keeps Alice and Bob apart
	@echo '== pk-local: one thread-local slot, each thread sees its own name'
	$(RELEASE)/pk-local
	$(RELEASE)/pk-local --names Ann,Ben,Cy
run-pipe: build ## pk-pipe: many writers one pipe, socketpair duplex, SIGPIPE
	@echo '== pk-pipe: 5 writers into one pipe, then ping-pong, then a reader that leaves'
	$(RELEASE)/pk-pipe fan-in
	$(RELEASE)/pk-pipe fan-in --writers 16 --messages 10000 --size 4096 --quiet
	$(RELEASE)/pk-pipe duplex --rounds 3
	$(RELEASE)/pk-pipe sigpipe
	$(RELEASE)/pk-pipe sigpipe --ignore
run-spawn: build ## pk-spawn: clone + dup2 + exec, captured output, timeout(1)/env(1) wrapper, status
	@echo '== pk-spawn: call, communicate(input), a timeout, env changes, statuses 124/126/127/137/128+N beside Python returncodes'
	$(RELEASE)/pk-spawn -- echo hello from a child
	$(RELEASE)/pk-spawn --input 'hello' --capture -- sh -c 'tr a-z A-Z; echo to stderr >&2'
	$(RELEASE)/pk-spawn -v -- sh -c 'exit 3' || echo "pk-spawn exited $$? (expected: the command's own status)"
	$(RELEASE)/pk-spawn -v --timeout 0.3 --kill-after 0.3 -- sh -c 'trap "" TERM; sleep 5' || echo "pk-spawn exited $$? (expected: 128+9, SIGKILL after the ignored SIGTERM)"
	$(RELEASE)/pk-spawn --clear-env --env GREETING=hi --cwd /tmp -- /bin/sh -c 'echo $$GREETING from $$PWD'
	$(RELEASE)/pk-spawn -v -- sh -c 'kill -TERM $$$$' || echo "pk-spawn exited $$? (expected: 128+15, the command's SIGTERM)"
	@echo '-- expected to fail: a command that does not exist (one line on stderr, exit 127)'
	$(RELEASE)/pk-spawn -v -- no-such-command || echo "pk-spawn exited $$? (expected)"
	bash scripts/spawn-status.sh
