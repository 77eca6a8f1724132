//! Builds the policy components the host needs from source:
//!
//! - the built-in policies `policies/flagger`, `policies/statistical` and
//!   `policies/change-window`, embedded into the binary
//!   (`$OUT_DIR/<name>.wasm`);
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
use std::fmt;
use std::path::PathBuf;

#[path = "src/policy/toolchain.rs"]
mod toolchain;
use toolchain::{componentize, Toolchain, TARGET};

/// Cargo profile for policies, defined in the root `Cargo.toml` (and mirrored
/// in `policies/fixtures/Cargo.toml`).
const PROFILE: &str = "policy";
/// Built-in policies: directory under `policies/` (also the name of the
/// `.wasm` in `$OUT_DIR`), crate `fledge-policy-<name>`.
const BUILTINS: &[&str] = &["flagger", "statistical", "change-window"];
/// Fixture crates under `policies/fixtures`; crate `fixture-<name>` becomes
/// `<name>.wasm`. (`extern-import` is built too but cannot become a
/// component: `fledge policy build` must say why.)
const FIXTURES: &[&str] = &[
    "endless-loop",
    "memory-bomb",
    "panic",
    "bad-weight",
    "wrong-world",
    "stateful",
    "stack-overflow",
    "hostile-text",
    "extra-imports",
    "series-reader",
    "clock-reader",
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
        "policies/fixtures/Cargo.toml",
        "policies/fixtures/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for builtin in BUILTINS {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("policies").join(builtin).display()
        );
    }
    for fixture in FIXTURES.iter().chain(&["extern-import"]) {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("policies/fixtures").join(fixture).display()
        );
    }

    let toolchain = Toolchain::detect()?;
    let target_dir = root.join("target").join("wasm");
    let built = target_dir.join(TARGET).join(PROFILE);

    // The built-in policies are rlibs for native use: ask for cdylibs here.
    for builtin in BUILTINS {
        let package = format!("fledge-policy-{builtin}");
        toolchain.cargo(
            &root.join("Cargo.toml"),
            &target_dir,
            PROFILE,
            &["rustc", "-p", &package, "--lib", "--crate-type", "cdylib"],
        )?;
        componentize(
            &built.join(format!("{}.wasm", package.replace('-', "_"))),
            &out_dir.join(format!("{builtin}.wasm")),
        )?;
    }

    // Fixtures are cdylibs already: one build for all of them.
    toolchain.cargo(
        &root.join("policies/fixtures/Cargo.toml"),
        &target_dir,
        PROFILE,
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
