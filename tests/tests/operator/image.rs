//! `scripts/image.sh --binary` with the built `fledge`: the OCI layouts it writes are read as a
//! runtime reads them (index, manifest, config, layers in order, every digest checked), and the
//! extracted root filesystems run: `fledge version` and the guide's simulation in the fledge
//! image, which has no shell; a `type: bash` webhook (`curl | grep`) through `fledge loadtester`
//! in the load tester's. No cluster needed. (In the cluster test binary only to keep test
//! binaries few.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fledge_e2e::http;
use serde_json::{json, Value};

use super::{fledge_binary, free_port};

const UID: &str = "65532";

fn repo() -> PathBuf {
    fledge_e2e::cluster::crate_dir().join("..")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("fledge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    Ok(out)
}

fn sha256(path: &Path, gunzip: bool) -> Result<String> {
    let script = if gunzip {
        "gzip -dc \"$0\" | sha256sum"
    } else {
        "sha256sum < \"$0\""
    };
    let out = run(Command::new("sh").args(["-c", script]).arg(path))?;
    ensure!(out.status.success(), "hashing {} failed", path.display());
    let text = String::from_utf8(out.stdout)?;
    Ok(format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or("")
    ))
}

/// An image read from an OCI layout: its config, and its layers unpacked in order into `root`.
struct Image {
    config: Value,
    root: PathBuf,
    /// Bytes of the compressed layers, and of the tars they hold.
    compressed: u64,
    unpacked: u64,
}

/// A blob of `layout` named by `descriptor`, checked against the descriptor's digest and size.
fn blob(layout: &Path, descriptor: &Value, gunzip_digest: Option<&str>) -> Result<PathBuf> {
    let digest = descriptor["digest"]
        .as_str()
        .context("a descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("digest {digest} is not sha256"))?;
    let path = layout.join("blobs/sha256").join(hex);
    let len = std::fs::metadata(&path)
        .with_context(|| format!("blob {digest} missing from {}", layout.display()))?
        .len();
    ensure!(
        Some(len) == descriptor["size"].as_u64(),
        "blob {digest}: {len} bytes, descriptor says {}",
        descriptor["size"]
    );
    ensure!(
        sha256(&path, false)? == digest,
        "blob {digest} does not hash to its name"
    );
    if let Some(diff_id) = gunzip_digest {
        ensure!(
            sha256(&path, true)? == diff_id,
            "layer {digest} does not unpack to diff_id {diff_id}"
        );
    }
    Ok(path)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn open(layout: &Path, root: PathBuf, reference: &str) -> Result<Image> {
    ensure!(
        read_json(&layout.join("oci-layout"))?["imageLayoutVersion"] == "1.0.0",
        "{}: not an OCI image layout",
        layout.display()
    );
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"]
        .as_array()
        .context("index.json has no manifests")?;
    ensure!(
        manifests.len() == 1,
        "one image per layout, got {}",
        manifests.len()
    );
    let m = &manifests[0];
    ensure!(
        m["annotations"]["io.containerd.image.name"] == reference,
        "{m}"
    );
    ensure!(
        m["platform"] == json!({"architecture": "amd64", "os": "linux"}),
        "{m}"
    );
    let manifest = read_json(&blob(layout, m, None)?)?;
    ensure!(
        manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json",
        "{manifest}"
    );
    let config = read_json(&blob(layout, &manifest["config"], None)?)?;
    let layers = manifest["layers"]
        .as_array()
        .context("a manifest without layers")?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .context("a config without diff_ids")?;
    ensure!(
        layers.len() == diff_ids.len(),
        "{} layers, {} diff_ids",
        layers.len(),
        diff_ids.len()
    );
    ensure!(
        config["history"].as_array().map(Vec::len) == Some(layers.len()),
        "one history entry per layer: {}",
        config["history"]
    );
    std::fs::create_dir_all(&root)?;
    let (mut compressed, mut unpacked) = (0, 0);
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        ensure!(
            layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
            "{layer}"
        );
        let path = blob(layout, layer, diff_id.as_str())?;
        let out = run(Command::new("tar")
            .args(["-xzf"])
            .arg(&path)
            .arg("-C")
            .arg(&root))?;
        ensure!(
            out.status.success(),
            "untar {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        compressed += layer["size"].as_u64().unwrap_or(0);
        let tar = run(Command::new("sh")
            .args(["-c", "gzip -dc \"$0\" | wc -c"])
            .arg(&path))?;
        unpacked += String::from_utf8_lossy(&tar.stdout).trim().parse::<u64>()?;
    }
    Ok(Image {
        config,
        root,
        compressed,
        unpacked,
    })
}

/// Every path in `root`, relative, directories included.
fn tree(root: &Path) -> Result<BTreeSet<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            out.insert(path.strip_prefix(root)?.to_string_lossy().into_owned());
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// `argv` in `root` as the image's user: with chroot when root, else (for the fledge binary
/// only) through the image's own loader and libraries.
fn in_image(root: &Path, argv: &[&str]) -> Command {
    if is_root() {
        // Found on this machine's PATH; the image's PATH is the one the command gets.
        let mut c = Command::new(on_path("chroot"));
        c.arg(format!("--userspec={UID}:{UID}"))
            .arg(root)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        return c;
    }
    let loader = root.join("lib64/ld-linux-x86-64.so.2");
    let program = root.join(argv[0].trim_start_matches('/'));
    let mut c = if loader.exists() {
        let mut c = Command::new(loader);
        c.arg("--library-path")
            .arg(root.join("lib/x86_64-linux-gnu"))
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    c.args(&argv[1..]).env_clear();
    c
}

fn on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The fledge image: no shell, non-root, and it runs `fledge version` and the guide.
fn check_fledge(image: &Image) -> Result<()> {
    let c = &image.config["config"];
    ensure!(c["User"] == format!("{UID}:{UID}"), "User is {}", c["User"]);
    ensure!(
        c["Entrypoint"] == json!(["/usr/local/bin/fledge"]),
        "Entrypoint is {}",
        c["Entrypoint"]
    );
    let root = &image.root;
    for shell in ["bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"] {
        ensure!(
            std::fs::symlink_metadata(root.join(shell)).is_err(),
            "the fledge image has /{shell}"
        );
    }
    // Nothing but the binary, its libraries, certificates and the user database.
    for path in tree(root)? {
        let allowed = path == "usr/local/bin/fledge"
            || [
                "etc/passwd",
                "etc/group",
                "etc/nsswitch.conf",
                "etc/ssl/certs/ca-certificates.crt",
            ]
            .contains(&path.as_str())
            || path.starts_with("lib/x86_64-linux-gnu/")
            || path == "lib64/ld-linux-x86-64.so.2"
            || root.join(&path).is_dir();
        ensure!(allowed, "unexpected /{path} in the fledge image");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    ensure!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("nonroot:x:{UID}:{UID}:"))),
        "{passwd}"
    );

    let out = run(&mut in_image(
        root,
        &["/usr/local/bin/fledge", "version", "--output", "json"],
    ))?;
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.success(),
        "fledge version in the image failed: {stderr}"
    );
    let v: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("fledge version printed {stdout}"))?;
    ensure!(v["version"] == env!("CARGO_PKG_VERSION"), "{v}");
    ensure!(v["wit"] == fledge::build_info::WIT_PACKAGE, "{v}");
    ensure!(v["crds"][0]["apiVersion"] == "flagger.app/v1beta1", "{v}");
    ensure!(
        v["crds"][1]["apiVersion"] == "policies.fledge.dev/v1alpha1",
        "{v}"
    );

    // The guide's Canary and scenario, placed inside the root for the simulation.
    let work = root.join("work");
    std::fs::create_dir_all(&work)?;
    for (from, to) in [
        ("examples/podinfo/canary.yaml", "canary.yaml"),
        ("examples/scenarios/promote.yaml", "promote.yaml"),
    ] {
        std::fs::copy(repo().join(from), work.join(to))
            .with_context(|| format!("copying {from}"))?;
    }
    let (canary, scenario) = if is_root() {
        (
            "/work/canary.yaml".to_string(),
            "/work/promote.yaml".to_string(),
        )
    } else {
        let s = |f: &str| work.join(f).to_string_lossy().into_owned();
        (s("canary.yaml"), s("promote.yaml"))
    };
    let out = run(&mut in_image(
        root,
        &[
            "/usr/local/bin/fledge",
            "simulate",
            "--canary",
            &canary,
            "--scenario",
            &scenario,
            "--format",
            "events",
        ],
    ))?;
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(0),
        "fledge simulate in the image: {:?}\n{stderr}",
        out.status
    );
    ensure!(
        stdout.starts_with("New revision detected! Scaling up podinfo.test\n"),
        "{stdout}"
    );
    ensure!(
        stdout.ends_with(
            "Routing all traffic to primary\nPromotion completed! Scaling down podinfo.test\n"
        ),
        "{stdout}"
    );
    Ok(())
}

/// A running `fledge loadtester` in the image; killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The load tester image: its entrypoint serves, and a `type: bash` webhook with curl and
/// grep passes or fails on what the command finds.
fn check_loadtester(image: &Image) -> Result<()> {
    let c = &image.config["config"];
    ensure!(c["User"] == format!("{UID}:{UID}"), "User is {}", c["User"]);
    ensure!(
        c["Entrypoint"] == json!(["/usr/local/bin/fledge", "loadtester"]),
        "Entrypoint is {}",
        c["Entrypoint"]
    );
    let root = &image.root;
    for tool in ["bin/sh", "bin/bash", "bin/grep", "usr/bin/curl"] {
        ensure!(
            root.join(tool).exists(),
            "the load tester image has no /{tool}"
        );
    }
    // busybox and curl run only chrooted (curl's libraries live at absolute
    // paths): without root the shell checks cannot run, and that is a failure.
    ensure!(
        is_root(),
        "the load tester's shell commands run chrooted, which needs root"
    );
    // A container runtime gives the container /dev; the shells' stdin is /dev/null.
    std::fs::create_dir_all(root.join("dev"))?;
    let dev_null = root.join("dev/null");
    let made = run(Command::new("mknod")
        .args(["-m", "666"])
        .arg(&dev_null)
        .args(["c", "1", "3"]))?;
    ensure!(
        made.status.success(),
        "mknod {}: {}",
        dev_null.display(),
        text(&made).1
    );
    let port = free_port()?;
    let mut argv: Vec<String> = c["Entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    argv.extend(
        [
            "--allow-shell",
            "--bind",
            "127.0.0.1",
            "--timeout",
            "2s",
            "--port",
        ]
        .map(String::from),
    );
    argv.push(port.to_string());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = in_image(root, &argv)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting fledge loadtester in the image")?;
    let _running = Running(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while http::get(addr, "/healthz").map(|r| r.status).ok() != Some(200) {
        if Instant::now() > deadline {
            bail!("fledge loadtester in the image did not answer /healthz on {addr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The guide's acceptance test is `curl -s ... | grep token`; here the load tester's own
    // /healthz stands in for podinfo.
    let task = |cmd: &str| {
        json!({"name": "podinfo", "namespace": "test", "phase": "Progressing",
               "metadata": {"type": "bash", "cmd": cmd, "returnCmdOutput": "true"}})
        .to_string()
    };
    let pass = http::request(
        addr,
        "POST",
        "/",
        Some(&task(&format!(
            "curl -s http://127.0.0.1:{port}/healthz | grep OK"
        ))),
    )?;
    ensure!(
        pass.status == 200 && pass.body.trim() == "OK",
        "curl | grep OK: {} {}",
        pass.status,
        pass.body
    );
    let fail = http::request(
        addr,
        "POST",
        "/",
        Some(&task(&format!(
            "curl -s http://127.0.0.1:{port}/healthz | grep token"
        ))),
    )?;
    ensure!(
        fail.status != 200,
        "curl | grep token passed: {} {}",
        fail.status,
        fail.body
    );
    // A timeout ends the whole pipeline with the image's kill(1): the answer comes at the
    // timeout, not when the pipeline's `sleep` would have ended.
    let started = Instant::now();
    let slow = http::request(addr, "POST", "/", Some(&task("sleep 30 | cat")))?;
    let took = started.elapsed();
    ensure!(
        slow.status != 200 && slow.body.contains("timed out"),
        "sleep 30: {} {}",
        slow.status,
        slow.body
    );
    ensure!(
        took < Duration::from_secs(8),
        "the timed-out pipeline answered after {took:?}"
    );
    Ok(())
}

#[test]
fn the_images_hold_a_runnable_fledge_and_the_loadtester_a_shell() -> Result<()> {
    let binary = fledge_binary()?;
    let scratch = Scratch::new("image")?;
    let out = scratch.0.join("out");
    let started = Instant::now();
    let built = run(Command::new(repo().join("scripts/image.sh"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out))?;
    let took = started.elapsed();
    let (stdout, stderr) = text(&built);
    ensure!(
        built.status.success(),
        "scripts/image.sh failed:\n{stdout}{stderr}"
    );
    eprint!("{stdout}");

    let version = env!("CARGO_PKG_VERSION");
    let fledge = open(
        &out.join("fledge"),
        scratch.0.join("fledge-root"),
        &format!("ghcr.io/fledge-dev/fledge:{version}"),
    )?;
    let loadtester = open(
        &out.join("fledge-loadtester"),
        scratch.0.join("loadtester-root"),
        &format!("ghcr.io/fledge-dev/fledge-loadtester:{version}"),
    )?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "image.sh took {took:.1?}; fledge image {:.1} MiB compressed ({:.1} MiB unpacked), \
         fledge-loadtester {:.1} MiB ({:.1} MiB), from {}",
        mib(fledge.compressed),
        mib(fledge.unpacked),
        mib(loadtester.compressed),
        mib(loadtester.unpacked),
        binary.display()
    );
    // The load tester image is the fledge image plus a layer.
    let layers = |i: &Image| {
        i.config["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let (base, tester) = (layers(&fledge), layers(&loadtester));
    ensure!(
        !base.is_empty() && tester.len() == base.len() + 1 && tester[..base.len()] == base[..],
        "the load tester is not the fledge image plus one layer: {base:?} / {tester:?}"
    );
    check_fledge(&fledge)?;
    check_loadtester(&loadtester)?;
    Ok(())
}
