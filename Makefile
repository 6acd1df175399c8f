# The two commands a newcomer needs (see README.md):
#   make run    install what is missing, then start the master, a local worker and the image server
#   make test   install what is missing, then run the whole test suite
.PHONY: run test install lint

install:
	scripts/install-deps

run: install
	.venv/bin/buildbot-kernel run

lint: install
	.venv/bin/ruff check .

test: install
	.venv/bin/ruff check .
	scripts/run-tests $(PYTEST_ARGS)
