# tinyedge — see README.md. `make run` runs the demo, `make test` everything
# CI runs.

GO        ?= go
PKG       := github.com/tinyedge/tinyedge
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# buildTime: a clock reading earlier than it is not trusted (no SAS token is minted on it).
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildTime=$(BUILD_TIME)
STATICCHECK_VERSION := v0.8.2
DIST      := dist
RUNFLAGS  ?=

.PHONY: all build cross bundle run test test-race test-qemu bench soak fuzz lint deps sdk clean image qemu test-system

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/tinyedge ./cmd/tinyedge

# Static, stripped, version-stamped binaries for the gateways, and the
# appliance's boot stage (the image's /init; scripts/image.sh builds its own).
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm   GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/tinyedge-linux-armv6 ./cmd/tinyedge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm   GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/tinyedge-linux-armv7 ./cmd/tinyedge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64         $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/tinyedge-linux-arm64 ./cmd/tinyedge
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64         $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/tinyedge-boot-linux-arm64 ./cmd/tinyedge-boot
	@ls -l $(DIST)/tinyedge-linux-* $(DIST)/tinyedge-boot-linux-*

# Signed OTA bundles of the cross builds: make bundle KEY=path/to/signing.key
# (make one with `./dist/tinyedge bundle keygen -o NAME`; keep it out of the
# repository).
KEY ?= $(error set KEY to a signing key made by `tinyedge bundle keygen`)
BUNDLE_VERSION ?= $(patsubst v%,%,$(VERSION))
bundle: cross build
	./$(DIST)/tinyedge bundle create --key $(KEY) --version $(BUNDLE_VERSION) --binary $(DIST)/tinyedge-linux-arm64 -o $(DIST)/tinyedge-linux-arm64.bundle
	./$(DIST)/tinyedge bundle create --key $(KEY) --version $(BUNDLE_VERSION) --binary $(DIST)/tinyedge-linux-armv6 --goarm 6 -o $(DIST)/tinyedge-linux-armv6.bundle
	./$(DIST)/tinyedge bundle create --key $(KEY) --version $(BUNDLE_VERSION) --binary $(DIST)/tinyedge-linux-armv7 --goarm 7 -o $(DIST)/tinyedge-linux-armv7.bundle
	@ls -l $(DIST)/*.bundle

# The quickstart: simulated temperature sensor -> filter -> $upstream,
# into the IoT Hub emulator tinyedge starts on loopback when the device is
# not provisioned (watch it with `dist/tinyedge hubsim monitor`). Ctrl-C
# stops it.
run: build
	./$(DIST)/tinyedge run $(RUNFLAGS)

# Everything: lint, the race-detector run, and the suite on arm64 and armv6
# under qemu-user.
test: deps sdk lint test-race test-qemu
	@echo "make test: all passed"

test-race:
	$(GO) test -race -count=1 ./...

# The whole suite as arm64 and ARMv6 (Raspberry Pi Zero/1) binaries run by
# qemu-user.
test-qemu: deps
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64 ./...
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) test -count=1 -exec 'qemu-arm -cpu arm1176' ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	./scripts/size.sh

# The long runs: the store's crash test with 60 kills and the
# million-message backlog. Not part of `make test`.
soak:
	TINYEDGE_SOAK=1 $(GO) test -count=1 -v -run 'TestCrash|TestBacklogSoak' ./store/

# Every fuzz test for FUZZTIME (30s) each; FUZZ=regexp picks some. Not
# part of `make test`. A failing input stays in testdata/fuzz/.
fuzz:
	./scripts/fuzz.sh

lint:
	@out=$$(gofmt -l cmd hub modules hw store build scripts 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# The appliance: a bootable arm64 image (Debian's kernel, an initramfs
# with the boot stage tinyedge-boot as /init, a data disk with slot a) in dist/image, built
# without root; `make qemu` boots it with the console on the terminal
# (Ctrl-A X quits). `make image RPI=1` adds a Raspberry Pi 3/4 SD card
# (dist/image/rpi-sdcard.img). See build/image.
ARCH ?= arm64
image: deps
	ARCH=$(ARCH) ./scripts/image.sh

qemu:
	@[ -f dist/image/data.img ] || $(MAKE) image
	./scripts/qemu.sh

# The full-system tests under qemu-system-aarch64: boot, OTA, rollback,
# power cuts, tampered bundles. Reuses dist/image when it is there.
test-system: deps
	./scripts/system-test.sh

# Installs what the tests need on a fresh Debian machine.
deps:
	./scripts/deps.sh

# The official Azure IoT Node SDK (scripts/sdk, pinned by its lockfile)
# that the conformance tests drive against hubsim; needs node and npm.
sdk:
	./scripts/deps.sh sdk

clean:
	rm -rf $(DIST)
	$(GO) clean -testcache
