//! Building a policy crate into a component: a nested cargo for
//! `wasm32-unknown-unknown`, then `wit-component` turns the core module into a
//! component (wit-bindgen embeds the component type in the module, so no WIT
//! is passed explicitly).
//!
//! The wasm32 standard library comes from rustup when the target is installed,
//! otherwise from Debian's `rustc-web` (std built from source with
//! `-Zbuild-std`). Nothing here installs anything.
//!
//! Shared by `host/build.rs` (the built-in policy and the test fixtures) and
//! `fledge policy build` (policies of users), so both build the same way.
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-unknown-unknown";
/// Stack of the policy components built here (Rust's default is 1 MiB): a
/// policy's call depth is shallow, and with the SDK's 24 KiB arena the
/// built-in's initial memory is one wasm page, which is all the pool resets
/// after each decision.
pub const GUEST_STACK_BYTES: u32 = 32 << 10;

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

/// Why a policy could not be built, with the command's output.
#[derive(Debug)]
pub struct ToolchainError(pub String);

impl fmt::Display for ToolchainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ToolchainError {}

fn fail(msg: impl Into<String>) -> ToolchainError {
    ToolchainError(msg.into())
}

/// How to get a wasm32 standard library.
pub enum Toolchain {
    /// The active toolchain has the target installed (`rustup target add`).
    Installed { cargo: OsString, rustc: OsString },
    /// Debian's `rustc-web`: std built from `/usr/lib/rustlib/src/rust`,
    /// linked with `wasm-ld` from `lld`.
    DebianWeb,
}

impl Toolchain {
    pub fn detect() -> Result<Toolchain, ToolchainError> {
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
    pub fn cargo(
        &self,
        manifest: &Path,
        target_dir: &Path,
        profile: &str,
        args: &[&str],
    ) -> Result<(), ToolchainError> {
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
            .args(["--profile", profile, "--target", TARGET, "--quiet"]);
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
pub fn componentize(module: &Path, component: &Path) -> Result<(), ToolchainError> {
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
