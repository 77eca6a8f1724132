//! What a component may cost to load, checked before any of it reaches
//! Cranelift. Compilation time and memory grow with the code: the number of
//! functions, the size of each body and, for SSA construction and register
//! allocation, the locals live across its blocks. One pass of `wasmparser`
//! over the bytes (no validation, no allocation per item) counts them and
//! refuses a component beyond any bound, naming the bound and its limit.
use super::error::PolicyError;
use wasmparser::{Encoding, Parser, Payload};

/// Bounds on a policy component before it is compiled.
///
/// Compile time is about linear in the code for ordinary functions (2 µs a
/// byte here), but a function whose many locals all stay live across many
/// blocks costs up to ten times more per byte, and more the larger it is:
/// hence a bound on locals times body size besides the plain ones. The
/// defaults take the built-in policy (46 KB of code in 87 functions; its
/// largest function 8.9 KB with 49 locals, 0.43 M locals × bytes) with a
/// margin of five or more on every bound on code, while the costliest
/// component they accept compiles in about 1 s of CPU and 75 MB on the
/// project's 2-core machine (see `benches/compile.rs` and the README). A policy that pulls in large
/// libraries (`regex` and `serde_json` make 870 KB of code) needs larger
/// limits, and pays for them in load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Size of the component file.
    pub max_component_bytes: usize,
    /// Core modules in the component, nested components included (a policy
    /// has its own module plus wit-component's shim and fixup).
    pub max_core_modules: u32,
    /// Functions defined by all core modules together (each costs a fixed
    /// amount to compile and register, however small).
    pub max_functions: u32,
    /// Bytes of one function body.
    pub max_function_bytes: u32,
    /// Locals one function declares (parameters excluded).
    pub max_locals_per_function: u32,
    /// Locals times body bytes of one function: what register allocation
    /// and SSA construction grow with.
    pub max_locals_times_bytes: u64,
    /// Bytes of all function bodies of all modules together.
    pub max_code_bytes: u64,
    /// Types defined by one core module.
    pub max_types_per_module: u32,
    /// Items of the component-level sections (types, canonical functions,
    /// instances, aliases, imports, exports): each may make wasmtime
    /// generate and compile a trampoline.
    pub max_component_items: u32,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_component_bytes: 4 << 20,
            max_core_modules: 8,
            max_functions: 2_000,
            max_function_bytes: 64 << 10,
            max_locals_per_function: 1_000,
            max_locals_times_bytes: 2_500_000,
            max_code_bytes: 320 << 10,
            max_types_per_module: 1_000,
            max_component_items: 1_000,
        }
    }
}

/// Refuses `bytes` beyond any of `limits`. Malformed input is left for
/// wasmtime to report in its own words, with what was counted until then
/// already within bounds.
pub fn check(bytes: &[u8], limits: &LoadLimits) -> Result<(), PolicyError> {
    if bytes.len() > limits.max_component_bytes {
        return Err(exceeded(
            "the component".into(),
            "bytes",
            bytes.len() as u64,
            limits.max_component_bytes as u64,
        ));
    }
    let mut modules: u32 = 0;
    let mut component_items: u64 = 0;
    let mut code_bytes: u64 = 0;
    let mut functions: u64 = 0;
    // Within the current core module: its index and its functions so far.
    let mut module: u32 = 0;
    let mut function: u32 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            Payload::Version {
                encoding: Encoding::Module,
                ..
            } => {
                modules += 1;
                module = modules - 1;
                function = 0;
                within(
                    modules.into(),
                    limits.max_core_modules.into(),
                    || "the component".into(),
                    "core modules",
                )?;
            }
            Payload::TypeSection(types) => within(
                types.count().into(),
                limits.max_types_per_module.into(),
                || format!("core module {module}"),
                "types",
            )?,
            Payload::CodeSectionStart { count, size, .. } => {
                functions += u64::from(count);
                within(
                    functions,
                    limits.max_functions.into(),
                    || "the component".into(),
                    "functions",
                )?;
                code_bytes += u64::from(size);
                within(
                    code_bytes,
                    limits.max_code_bytes,
                    || "the component".into(),
                    "bytes of code",
                )?;
            }
            Payload::CodeSectionEntry(body) => {
                let at = || format!("function {function} of core module {module}");
                let body_bytes = body.range().len() as u64;
                within(
                    body_bytes,
                    limits.max_function_bytes.into(),
                    at,
                    "bytes of code",
                )?;
                let mut locals: u64 = 0;
                if let Ok(reader) = body.get_locals_reader() {
                    for entry in reader {
                        let Ok((count, _)) = entry else { break };
                        locals += u64::from(count);
                        within(locals, limits.max_locals_per_function.into(), at, "locals")?;
                    }
                }
                within(
                    locals * body_bytes,
                    limits.max_locals_times_bytes,
                    at,
                    "locals times bytes of code",
                )?;
                function += 1;
            }
            Payload::ComponentTypeSection(s) => component_items += u64::from(s.count()),
            Payload::ComponentCanonicalSection(s) => component_items += u64::from(s.count()),
            Payload::ComponentInstanceSection(s) => component_items += u64::from(s.count()),
            Payload::InstanceSection(s) => component_items += u64::from(s.count()),
            Payload::ComponentAliasSection(s) => component_items += u64::from(s.count()),
            Payload::ComponentImportSection(s) => component_items += u64::from(s.count()),
            Payload::ComponentExportSection(s) => component_items += u64::from(s.count()),
            Payload::CoreTypeSection(s) => component_items += u64::from(s.count()),
            _ => {}
        }
        within(
            component_items,
            limits.max_component_items.into(),
            || "the component".into(),
            "component-level items (types, instances, canonical functions, aliases, imports, exports)",
        )?;
    }
    Ok(())
}

fn within(
    value: u64,
    limit: u64,
    at: impl FnOnce() -> String,
    what: &'static str,
) -> Result<(), PolicyError> {
    if value > limit {
        return Err(exceeded(at(), what, value, limit));
    }
    Ok(())
}

fn exceeded(at: String, what: &'static str, value: u64, limit: u64) -> PolicyError {
    PolicyError::TooExpensive {
        at,
        what,
        value,
        limit,
    }
}
