//! Builds the policy components the host needs from source:
//!
//! - `policies/flagger`, the built-in policy, embedded into the binary
//!   (`$OUT_DIR/flagger.wasm`);
//! - `policies/fixtures/*`, hostile policies for the runtime's tests
//!   (`$OUT_DIR/fixtures/<name>.wasm`, directory exported as `FLEDGE_FIXTURE_DIR`).
//!
//! Each crate is compiled to a core module for `wasm32-unknown-unknown` by a
//! nested cargo (own target directory, so it never waits on the outer cargo's
//! lock), then turned into a component here with `wit-component`; wit-bindgen
//! embeds the component type in the module, so no WIT is passed explicitly.
//!
//! The wasm32 standard library comes from rustup when the target is installed,
//! otherwise from Debian's `rustc-web` (std built from source with
//! `-Zbuild-std`). This script never installs anything.
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
/// Cargo profile for policies, defined in the root `Cargo.toml` (and mirrored
/// in `policies/fixtures/Cargo.toml`).
const PROFILE: &str = "policy";
/// Stack of the policy components built here; with the SDK's 24 KiB arena
/// and the data (about 4 KiB), the built-in's initial memory is one wasm page.
const GUEST_STACK_BYTES: u32 = 32 << 10;
/// Fixture crates under `policies/fixtures`; crate `fixture-<name>` becomes `<name>.wasm`.
const FIXTURES: &[&str] = &[
    "endless-loop",
    "memory-bomb",
    "panic",
    "bad-weight",
    "wrong-world",
    "stateful",
];

/// Environment variables the nested cargo inherits. Everything else (the outer
/// cargo's `CARGO_*`, `RUSTFLAGS`, `RUSTC_WRAPPER`, clippy's
/// `RUSTC_WORKSPACE_WRAPPER`, ...) would leak the outer build's settings into a
/// build for another target, so the environment starts empty.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "LANG",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_NET_OFFLINE",
    "CARGO_HTTP_CAINFO",
    "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

struct BuildError(String);

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for BuildError {
    fn from(e: E) -> Self {
        BuildError(e.to_string())
    }
}

fn fail(msg: impl Into<String>) -> BuildError {
    BuildError(msg.into())
}

fn main() {
    if let Err(BuildError(msg)) = run() {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BuildError> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or_else(|| fail("host/ has no parent directory"))?
        .to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR")?);

    // The root manifest and lock carry the `policy` profile and the guest
    // dependencies (wit-bindgen).
    for dir in [
        "Cargo.toml",
        "Cargo.lock",
        "wit",
        "policies/sdk",
        "policies/flagger",
        "policies/fixtures/Cargo.toml",
        "policies/fixtures/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for fixture in FIXTURES {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("policies/fixtures").join(fixture).display()
        );
    }

    let toolchain = Toolchain::detect()?;
    let target_dir = root.join("target").join("wasm");
    let built = target_dir.join(TARGET).join(PROFILE);

    // The built-in policy is an rlib for native use: ask for a cdylib here.
    toolchain.cargo(
        &root.join("Cargo.toml"),
        &target_dir,
        &[
            "rustc",
            "-p",
            "fledge-policy-flagger",
            "--lib",
            "--crate-type",
            "cdylib",
        ],
    )?;
    componentize(
        &built.join("fledge_policy_flagger.wasm"),
        &out_dir.join("flagger.wasm"),
    )?;

    // Fixtures are cdylibs already: one build for all of them.
    toolchain.cargo(
        &root.join("policies/fixtures/Cargo.toml"),
        &target_dir,
        &["build", "--workspace"],
    )?;
    let fixture_dir = out_dir.join("fixtures");
    std::fs::create_dir_all(&fixture_dir)?;
    for fixture in FIXTURES {
        let module = built.join(format!("fixture_{}.wasm", fixture.replace('-', "_")));
        componentize(&module, &fixture_dir.join(format!("{fixture}.wasm")))?;
    }
    println!(
        "cargo:rustc-env=FLEDGE_FIXTURE_DIR={}",
        fixture_dir.display()
    );
    Ok(())
}

fn env(name: &str) -> Result<String, BuildError> {
    std::env::var(name).map_err(|_| fail(format!("{name} is not set by cargo")))
}

/// How to get a wasm32 standard library.
enum Toolchain {
    /// The active toolchain has the target installed (`rustup target add`).
    Installed { cargo: OsString, rustc: OsString },
    /// Debian's `rustc-web`: std built from `/usr/lib/rustlib/src/rust`,
    /// linked with `wasm-ld` from `lld`.
    DebianWeb,
}

impl Toolchain {
    fn detect() -> Result<Toolchain, BuildError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        if let Some(sysroot) = sysroot(&rustc) {
            if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
                return Ok(Toolchain::Installed { cargo, rustc });
            }
        }
        let debian_rustc = Path::new("/usr/bin/rustc");
        let debian_ready = Path::new("/usr/bin/cargo").is_file()
            && Path::new("/usr/lib/rustlib/src/rust/library").is_dir()
            && knows_target(debian_rustc)
            && on_path("wasm-ld");
        if debian_ready {
            return Ok(Toolchain::DebianWeb);
        }
        Err(fail(format!(
            "cannot build the policy components: no Rust standard library for {TARGET}.\n\
             Fix it with one of:\n  \
             rustup target add {TARGET}\n  \
             scripts/setup.sh   (runs: apt-get install -y rustc-web cargo-web rust-web-src lld)"
        )))
    }

    /// Runs one nested cargo command for wasm32, quietly; on failure returns
    /// its output.
    fn cargo(&self, manifest: &Path, target_dir: &Path, args: &[&str]) -> Result<(), BuildError> {
        let mut cmd = match self {
            Toolchain::Installed { cargo, rustc } => {
                let mut cmd = Command::new(cargo);
                cmd.env_clear().env("RUSTC", rustc);
                cmd
            }
            Toolchain::DebianWeb => {
                let mut cmd = Command::new("/usr/bin/cargo");
                cmd.env_clear()
                    .env("RUSTC", "/usr/bin/rustc")
                    // -Zbuild-std is unstable; rustc-web is a stable compiler.
                    .env("RUSTC_BOOTSTRAP", "1")
                    // rustc-web ships no rust-lld; only the wasm32 link needs a linker.
                    .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld");
                cmd
            }
        };
        // A small stack (Rust's default is 1 MiB): a policy's call depth is
        // shallow, and every page of initial memory is reset after each decision.
        cmd.env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            format!("-C link-arg=-zstack-size={GUEST_STACK_BYTES}"),
        );
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.args(args)
            .arg("--manifest-path")
            .arg(manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .args(["--profile", PROFILE, "--target", TARGET, "--quiet"]);
        if matches!(self, Toolchain::DebianWeb) {
            cmd.arg("-Zbuild-std=std,panic_abort");
        }
        let output = cmd
            .output()
            .map_err(|e| fail(format!("cannot run {cmd:?}: {e}")))?;
        if !output.status.success() {
            return Err(fail(format!(
                "building policy components failed ({}):\n{:?}\n{}{}",
                output.status,
                cmd,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}

fn sysroot(rustc: &OsString) -> Option<PathBuf> {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn knows_target(rustc: &Path) -> bool {
    Command::new(rustc)
        .args(["--print", "target-list"])
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l == TARGET)
        })
        .unwrap_or(false)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Core module (with wit-bindgen's embedded component type) to component.
fn componentize(module: &Path, component: &Path) -> Result<(), BuildError> {
    let core = std::fs::read(module)
        .map_err(|e| fail(format!("cannot read {}: {e}", module.display())))?;
    let bytes = wit_component::ComponentEncoder::default()
        .module(&core)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| {
            fail(format!(
                "cannot make a component of {}: {e:#}",
                module.display()
            ))
        })?;
    // Write only on change so dependents are not rebuilt needlessly.
    if std::fs::read(component).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(component, &bytes)
            .map_err(|e| fail(format!("cannot write {}: {e}", component.display())))?;
    }
    Ok(())
}
