# `sam build --build-in-source` (BuildMethod: makefile) calls build-<LogicalId> once per function.
# The first call builds every function's binary in one `cargo lambda build` (each dependency
# compiled once, two fat-LTO links at a time on two cores); the later calls find the stamp fresh
# and only copy (docs/decisions.md, "One build for every function").
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
LAMBDA_DIR := $(ROOT)/target/lambda
STAMP := $(LAMBDA_DIR)/.built
# LogicalId=binary of every function: its Metadata.BuildProperties.Binary, which the local runner reads too.
FUNCTIONS := $(shell awk '/^  [A-Za-z0-9]+:$$/ {id = substr($$1, 1, length($$1) - 1)} /^ +Binary: / {print id "=" $$2}' $(ROOT)/template.yaml)
id = $(word 1,$(subst =, ,$(1)))
bin = $(word 2,$(subst =, ,$(1)))
SOURCES := $(ROOT)/Cargo.toml $(ROOT)/Cargo.lock $(ROOT)/.cargo/config.toml $(ROOT)/template.yaml \
           $(ROOT)/Makefile $(shell find $(ROOT)/shared $(ROOT)/functions -type f)

ifneq ($(abspath $(CURDIR)),$(ROOT))
$(error sam build copied the repository to $(CURDIR): run it as `sam build --build-in-source`)
endif

$(STAMP): $(SOURCES)
	cd $(ROOT) && cargo lambda build --release --target x86_64-unknown-linux-gnu \
	    --lambda-dir $(LAMBDA_DIR) $(foreach f,$(FUNCTIONS),--bin $(call bin,$(f)))
	touch $@

define function_target
.PHONY: build-$(call id,$(1))
build-$(call id,$(1)): $(STAMP)
	cp $(LAMBDA_DIR)/$(call bin,$(1))/bootstrap $$(ARTIFACTS_DIR)/bootstrap
endef
$(foreach f,$(FUNCTIONS),$(eval $(call function_target,$(f))))
