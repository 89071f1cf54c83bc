# Conveniences; the README's two commands are the scripts themselves.
.PHONY: setup demo test bench
setup:
	bash scripts/setup.sh --test
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
