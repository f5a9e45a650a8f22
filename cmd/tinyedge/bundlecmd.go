package main

import (
	"crypto/ed25519"
	"debug/buildinfo"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/build/bundle"
)

const bundleUsage = `Usage:
  tinyedge bundle keygen -o NAME
      Make a signing key pair: NAME.key (private, mode 0600; keep it off
      the devices and out of the repository) and NAME.pub (for the devices).
  tinyedge bundle create --key NAME.key --version V --binary FILE [--goarch ARCH] [--goarm N] [--min-version V] -o BUNDLE
      Sign FILE (a tinyedge binary) into an OTA bundle. GOARCH comes from
      the ELF header unless given; an arm binary needs --goarm 5, 6 or 7.
  tinyedge bundle inspect BUNDLE [--pub NAME.pub ...]
      Print the manifest, check the signature against the public keys and
      every payload against its SHA-256. Exit status 0 when it verifies,
      1 when it does not, 2 on usage errors.
`

// cmdBundle runs `tinyedge bundle keygen|create|inspect`.
func cmdBundle(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, bundleUsage)
		return fmt.Errorf("%w: want `tinyedge bundle keygen|create|inspect`", errUsage)
	}
	switch args[0] {
	case "keygen":
		return bundleKeygen(args[1:], stdout, stderr)
	case "create":
		return bundleCreate(args[1:], stdout, stderr)
	case "inspect":
		return bundleInspect(args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, bundleUsage)
		return nil
	}
	fmt.Fprint(stderr, bundleUsage)
	return fmt.Errorf("%w: unknown bundle command %q; want keygen, create or inspect", errUsage, args[0])
}

// parseInterspersed parses flags that may come before, between and
// after positional arguments (`inspect F --pub K`, `logs M --follow`),
// and returns the positional ones. After "--" every argument is
// positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func bundleKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("o", "", "write `NAME`.key and NAME.pub")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *name == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: want `tinyedge bundle keygen -o NAME`", errUsage)
	}
	pub, priv := bundle.GenerateKey()
	keyPath, pubPath, err := bundle.WriteKeyFiles(*name, pub, priv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: the private key (mode 0600); keep it off the devices and out of the repository\n", keyPath)
	fmt.Fprintf(stdout, "wrote %s: the public key, key id %s; give it to the devices\n", pubPath, bundle.KeyID(pub))
	return nil
}

func bundleCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyPath := fs.String("key", "", "private key `FILE` to sign with (from `tinyedge bundle keygen`)")
	version := fs.String("version", "", "semantic `VERSION` of the binary, e.g. 1.4.0")
	binary := fs.String("binary", "", "the tinyedge binary `FILE`, e.g. dist/tinyedge-linux-arm64")
	goarch := fs.String("goarch", "", "target `GOARCH`; read from the ELF header when not given")
	goarm := fs.String("goarm", "", "target `GOARM` (5, 6 or 7) for an arm binary")
	minVersion := fs.String("min-version", "", "oldest `VERSION` that may install the bundle")
	out := fs.String("o", "", "write the bundle to `FILE`")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *keyPath == "" || *version == "" || *binary == "" || *out == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: want `tinyedge bundle create --key K --version V --binary FILE -o BUNDLE`", errUsage)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if _, err := bundle.ParseVersion(*version); err != nil {
		return fmt.Errorf("%w: --version: %v", errUsage, err)
	}
	if *minVersion != "" {
		if _, err := bundle.ParseVersion(*minVersion); err != nil {
			return fmt.Errorf("%w: --min-version: %v", errUsage, err)
		}
	}
	arch, arm, err := binaryTarget(*binary, *goarch, set["goarm"], *goarm, stderr)
	if err != nil {
		return err
	}
	key, err := bundle.LoadPrivateKey(*keyPath)
	if err != nil {
		return err
	}
	m := bundle.Manifest{Version: *version, GOARCH: arch, GOARM: arm, MinVersion: *minVersion, Created: time.Now()}
	size, err := writeBundle(*out, key, m, *binary)
	if err != nil {
		return err
	}
	pub := key.Public().(ed25519.PublicKey)
	fmt.Fprintf(stdout, "wrote %s: tinyedge %s for %s, %d bytes (%d of them the binary), signed by key id %s\n",
		*out, *version, m.Target(), size, fileSize(*binary), bundle.KeyID(pub))
	return nil
}

// fileSize returns the size of the file at path, or 0.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// writeBundle writes the bundle to a temporary file beside path and
// renames it into place, so path is never a half-written bundle.
func writeBundle(path string, key ed25519.PrivateKey, m bundle.Manifest, binary string) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	err = bundle.Create(tmp, key, m, []bundle.PayloadSource{{Name: "tinyedge", Path: binary}})
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", path, err)
	}
	fi, err := os.Stat(tmp.Name())
	if err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("create %s: %w", path, err)
	}
	return fi.Size(), nil
}

// elfArch maps ELF machines to GOARCH.
var elfArch = map[elf.Machine]string{
	elf.EM_AARCH64: "arm64",
	elf.EM_ARM:     "arm",
	elf.EM_X86_64:  "amd64",
	elf.EM_386:     "386",
	elf.EM_RISCV:   "riscv64",
}

// binaryTarget decides GOARCH and GOARM for the bundle of binary: from the
// flags, checked against the ELF header, or from the ELF header alone.
// GOARM is not in the ELF header in a form one can trust, so an arm
// binary needs --goarm; the Go build info, when present, is used to catch
// a wrong one.
func binaryTarget(binary, goarch string, goarmSet bool, goarm string, stderr io.Writer) (string, string, error) {
	if _, err := os.Stat(binary); err != nil {
		return "", "", fmt.Errorf("%w: --binary: %v", errUsage, err)
	}
	elfArchName := ""
	f, err := elf.Open(binary)
	if err == nil {
		elfArchName = elfArch[f.Machine]
		f.Close()
	}
	switch {
	case goarch == "" && err != nil:
		return "", "", fmt.Errorf("%w: cannot read the architecture of %s (%v); pass --goarch", errUsage, binary, err)
	case goarch == "" && elfArchName == "":
		return "", "", fmt.Errorf("%w: %s is an ELF binary for %v, which tinyedge does not know; pass --goarch", errUsage, binary, f.Machine)
	case goarch == "":
		goarch = elfArchName
	case err != nil:
		fmt.Fprintf(stderr, "warning: %s is not an ELF binary (%v); trusting --goarch %s\n", binary, err, goarch)
	case elfArchName != "" && elfArchName != goarch:
		return "", "", fmt.Errorf("%w: --goarch %s, but %s is an ELF binary for %s", errUsage, goarch, binary, elfArchName)
	}
	built := ""
	if bi, err := buildinfo.ReadFile(binary); err == nil {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				built = s.Value
			}
		}
	}
	if goarch != "arm" {
		if goarm != "" {
			return "", "", fmt.Errorf("%w: --goarm %s is for arm binaries; this one is %s", errUsage, goarm, goarch)
		}
		return goarch, "", nil
	}
	if !goarmSet {
		hint := "6 for a Pi Zero or 1, 7 for a Pi 2 or later (as `make cross` built it)"
		if built != "" {
			hint = fmt.Sprintf("its Go build info says %s; confirm with --goarm %s", built, built)
		}
		return "", "", fmt.Errorf("%w: %s is an arm binary and its ARM version cannot be read reliably from the ELF header; pass --goarm (%s)", errUsage, binary, hint)
	}
	if goarm != "5" && goarm != "6" && goarm != "7" {
		return "", "", fmt.Errorf("%w: --goarm %q: want 5, 6 or 7", errUsage, goarm)
	}
	if built != "" && !strings.HasPrefix(built, goarm) {
		return "", "", fmt.Errorf("%w: --goarm %s, but %s was built with GOARM=%s", errUsage, goarm, binary, built)
	}
	return goarch, goarm, nil
}

func bundleInspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pubs stringList
	fs.Var(&pubs, "pub", "public key `FILE` to verify against (repeatable)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want `tinyedge bundle inspect BUNDLE [--pub KEY.pub ...]`", errUsage)
	}
	path := pos[0]
	var keys []ed25519.PublicKey
	keyFile := map[string]string{} // key id → file
	for _, p := range pubs {
		k, err := bundle.LoadPublicKeys(p)
		if err != nil {
			return fmt.Errorf("%w: --pub: %v", errUsage, err)
		}
		for _, key := range k {
			keyFile[bundle.KeyID(key)] = p
		}
		keys = append(keys, k...)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	defer f.Close()
	m, claimed, err := bundle.PeekManifest(f)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
	}
	fi, _ := f.Stat()
	printManifest(stdout, path, fi.Size(), m, claimed)
	if len(keys) == 0 {
		fmt.Fprintln(stdout, "signature    NOT CHECKED")
		return &exitError{code: 1, err: fmt.Errorf("%s: not verified: give --pub with the public key(s) the devices trust", path)}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r, err := bundle.Open(f, keys)
	if err != nil {
		fmt.Fprintln(stdout, "signature    NOT VERIFIED")
		return &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
	}
	fmt.Fprintf(stdout, "signature    ok: trusted key id %s (%s)\n", r.KeyID(), keyFile[r.KeyID()])
	for {
		p, pr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
		}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			fmt.Fprintf(stdout, "payload      %s: FAILED\n", p.Name)
			return &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
		}
		fmt.Fprintf(stdout, "payload      %s: sha256 ok\n", p.Name)
	}
	fmt.Fprintln(stdout, "verified")
	return nil
}

func printManifest(w io.Writer, path string, size int64, m bundle.Manifest, claimed string) {
	minVersion := m.MinVersion
	if minVersion == "" {
		minVersion = "any"
	}
	fmt.Fprintf(w, "bundle       %s (%d bytes)\n", path, size)
	fmt.Fprintf(w, "product      %s\n", m.Product)
	fmt.Fprintf(w, "version      %s\n", m.Version)
	fmt.Fprintf(w, "target       %s\n", m.Target())
	fmt.Fprintf(w, "min-version  %s\n", minVersion)
	fmt.Fprintf(w, "created      %s\n", m.Created.Format(time.RFC3339))
	fmt.Fprintf(w, "signed by    key id %s (as the bundle says)\n", claimed)
	fmt.Fprintf(w, "payloads     %d\n", len(m.Payloads))
	for _, p := range m.Payloads {
		fmt.Fprintf(w, "  %-10s %d bytes  sha256 %s\n", p.Name, p.Size, p.Digest())
	}
}
