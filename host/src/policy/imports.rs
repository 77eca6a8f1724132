//! What a policy may import: the interfaces of its world and nothing else.
//! A component that imports more (WASI, a host function of its own) cannot
//! be linked, and the error names every import that is in the way. Whether
//! it may import `metric-query` is the policy object's grant, checked where
//! the grant is known.
use crate::core::text::one_line;
use wasmparser::{Parser, Payload};

/// The worlds' imports, in every 0.1 version the host serves.
const ALLOWED: &[&str] = &[
    "fledge:policy/host@0.1.0",
    "fledge:policy/types@0.1.0",
    "fledge:policy/host@0.1.1",
    "fledge:policy/types@0.1.1",
    "fledge:policy/config@0.1.1",
    "fledge:policy/clock@0.1.1",
    "fledge:policy/metric-query@0.1.1",
];

/// Whether `name` is the `metric-query` capability's interface.
pub fn is_metric_query(name: &str) -> bool {
    name == "fledge:policy/metric-query@0.1.1"
}

/// Longest import name kept in an error.
const MAX_NAME_BYTES: usize = 256;

/// The names among `imports` that the world does not provide, cleaned for
/// an error message.
pub fn foreign<'a>(imports: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    imports
        .into_iter()
        .filter(|name| !ALLOWED.contains(name))
        .map(|name| one_line(name, MAX_NAME_BYTES))
        .collect()
}

/// The imports of a core module (before it is made a component) that the
/// world does not provide, as `module::name`. wit-bindgen names a module
/// import after its WIT interface, so a policy's module imports
/// `fledge:policy/*` only; anything else came from a dependency.
/// Unreadable bytes give an empty list: making the component reports them.
pub fn foreign_in_core_module(module: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let Ok(Payload::ImportSection(section)) = payload else {
            continue;
        };
        for import in section.into_imports() {
            let Ok(import) = import else { break };
            if !ALLOWED.contains(&import.module) {
                let name = format!("{}::{}", import.module, import.name);
                found.push(one_line(&name, MAX_NAME_BYTES));
            }
        }
    }
    found
}
