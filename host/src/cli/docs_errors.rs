//! The input errors Fledge reports, read from its own source: every
//! `issue(field, problem, fix)` call and every `Issue`/`BadReference`/`Refusal`
//! literal with its field, problem and fix. Formatted parts show as `<name>`.
//! The sources are compiled in, so `fledge docs` lists exactly the messages the
//! binary can print.
use std::fmt::Write as _;

/// `(heading, source file, source text)`.
const SOURCES: &[(&str, &str, &str)] = &[
    (
        "Canary",
        "api/validate.rs",
        include_str!("../api/validate.rs"),
    ),
    (
        "Canary analysis",
        "api/validate/analysis.rs",
        include_str!("../api/validate/analysis.rs"),
    ),
    (
        "Canary and scenario YAML",
        "api/yaml.rs",
        include_str!("../api/yaml.rs"),
    ),
    (
        "Canary references (target, configs, HPA, provider, policy)",
        "operator/workload.rs",
        include_str!("../operator/workload.rs"),
    ),
    (
        "Canary provider and policy",
        "operator/reconcile.rs",
        include_str!("../operator/reconcile.rs"),
    ),
    (
        "Policy selection (spec.policy)",
        "operator/policies/select.rs",
        include_str!("../operator/policies/select.rs"),
    ),
    (
        "RolloutPolicy and ClusterRolloutPolicy",
        "api/policy.rs",
        include_str!("../api/policy.rs"),
    ),
    (
        "Alerts (AlertProvider)",
        "notify/alerts.rs",
        include_str!("../notify/alerts.rs"),
    ),
    (
        "Simulator scenarios",
        "simulate/scenario.rs",
        include_str!("../simulate/scenario.rs"),
    ),
    (
        "Simulator series",
        "simulate/series.rs",
        include_str!("../simulate/series.rs"),
    ),
];

/// One error: its field, problem and fix as the source spells them.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

/// Error enums whose messages reach the user, `(heading, where it shows, file, source)`.
const ENUMS: &[(&str, &str, &str, &str)] = &[
    (
        "Policy failures",
        "A failed check of the step: a Warning Event `Halt <canary>.<namespace> advancement \
         policy failed: <message>` (the analysis rolls back once `analysis.threshold` is \
         reached; a failing policy never promotes), or the `Ready` condition of a policy object \
         whose component cannot be loaded, or `fledge simulate --policy` / `fledge policy` on \
         stderr.",
        "policy/error.rs",
        include_str!("../policy/error.rs"),
    ),
    (
        "Invalid policy decisions",
        "A policy's answer that breaks the contract: `policy failed: policy returned an invalid \
         decision: <message>`, a failed check.",
        "core/validate.rs",
        include_str!("../core/validate.rs"),
    ),
];

pub fn errors_md() -> String {
    let mut out = String::new();
    out.push_str(super::docs::GENERATED);
    out.push_str("\n# Input errors\n\n");
    out.push_str(
        "Every error Fledge reports about its input names the field, the problem and the fix. \
         On a cluster it is the `Valid` condition's message (`kubectl describe canary`) and a \
         Warning Event with reason `InvalidSpec`: `Invalid <canary>.<namespace>: <field>: \
         <problem>; <fix>`; for a policy object, its `Ready` condition; for an alert, a Warning \
         Event `Alert ... not sent: <field>: <problem>; <fix>`. `fledge simulate` prints the \
         same text on stderr with the file's name and exits 1. `<name>` stands for a value filled \
         in from your input; `…` for a text computed from it (a parser's message, a list of \
         names). See [troubleshooting](../troubleshooting.md) for the other messages.\n",
    );
    for (heading, file, src) in SOURCES {
        let entries = entries(src);
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n## {heading}\n\nFrom `host/src/{file}`.\n\n| field | problem | fix |\n|---|---|---|"
        );
        for e in entries {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                shown(&e.field),
                shown(&e.problem),
                shown(&e.fix)
            );
        }
    }
    for (heading, seen, file, src) in ENUMS {
        let _ = writeln!(
            out,
            "\n## {heading}\n\n{seen} From `host/src/{file}`.\n\n| error | message |\n|---|---|"
        );
        for (variant, message) in variants(src) {
            let _ = writeln!(out, "| `{variant}` | {} |", shown(&message));
        }
    }
    out
}

/// `(variant, message)` of every `#[error("...")]` in `src`, without its tests.
pub fn variants(src: &str) -> Vec<(String, String)> {
    let src = src.split("#[cfg(test)]").next().unwrap_or(src);
    let mut out = Vec::new();
    for (at, inner) in openings(src, "#[error(") {
        let args = split_top(inner);
        let Some(template) = args.first().and_then(|t| literal(t.trim())) else {
            continue;
        };
        let mut positional = args[1..].iter().map(|p| p.trim().to_string());
        let message = placeholders(&template, &mut positional);
        // The variant (or struct) the attribute is on: the next identifier
        // after the attribute and any doc comments.
        let rest = &src[at + "#[error(".len() + inner.len() + 2..];
        let variant = rest
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
            .map(|l| {
                l.trim_start_matches("pub ")
                    .trim_start_matches("struct ")
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .unwrap_or_default();
        out.push((variant, message));
    }
    out
}

fn shown(s: &str) -> String {
    if s == COMPUTED {
        return COMPUTED.into();
    }
    format!("`{}`", s.replace('|', "\\|").replace('`', "'"))
}

const COMPUTED: &str = "…";

/// The errors in one source file, in source order, without its tests.
pub fn entries(src: &str) -> Vec<Entry> {
    let src = src.split("#[cfg(test)]").next().unwrap_or(src);
    let mut found: Vec<(usize, Entry)> = Vec::new();
    for name in ["issue(", "refusal("] {
        for (at, inner) in openings(src, name) {
            let args = split_top(inner);
            if let [f, p, x] = &args[..] {
                found.push((at, entry(f, p, x)));
            }
        }
    }
    for name in ["Issue {", "BadReference {", "Refusal {"] {
        for (at, inner) in openings(src, name) {
            let mut f = None;
            let mut p = None;
            let mut x = None;
            for part in split_top(inner) {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("field:") {
                    f = Some(v);
                } else if let Some(v) = part.strip_prefix("problem:") {
                    p = Some(v);
                } else if let Some(v) = part.strip_prefix("fix:") {
                    x = Some(v);
                }
            }
            if let (Some(f), Some(p), Some(x)) = (f, p, x) {
                found.push((at, entry(f, p, x)));
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    let mut out: Vec<Entry> = Vec::new();
    for (_, e) in found {
        // Constructors that only pass their arguments on say nothing.
        let said = [&e.field, &e.problem, &e.fix]
            .iter()
            .filter(|s| s.as_str() != COMPUTED)
            .count();
        if said >= 2 && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

fn entry(f: &str, p: &str, x: &str) -> Entry {
    Entry {
        field: text(f),
        problem: text(p),
        fix: text(x),
    }
}

/// Where `name` opens (a call or a struct literal, not a definition), and the
/// source between its opening and its matching closing bracket.
fn openings<'a>(src: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = src[from..].find(name).map(|i| i + from) {
        from = i + name.len();
        let before = src[..i].trim_end();
        let joined = src[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let definition = ["fn", "struct", "impl", "for", "->"]
            .iter()
            .any(|k| before.ends_with(k));
        if joined || definition {
            continue;
        }
        if let Some(end) = closing(src, from) {
            out.push((i, &src[from..end]));
        }
    }
    out
}

/// The index of the bracket closing the one just before `start`.
fn closing(src: &str, start: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i)?,
            // A char literal such as '(' (not a lifetime).
            b'\'' if i + 2 < b.len() && b[i + 2] == b'\'' && b[i + 1] != b'\\' => i += 2,
            // An escaped one: '\'', '\\', '\n', '\u{..}'.
            b'\'' if i + 3 < b.len() && b[i + 1] == b'\\' => {
                i = src[i + 3..].find('\'').map(|j| i + 3 + j)?;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the quote closing the string literal that opens at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

/// The top-level comma-separated parts of `inner`.
fn split_top(inner: &str) -> Vec<&str> {
    let b = inner.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i).unwrap_or(b.len()),
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if !inner[start..].trim().is_empty() {
        parts.push(&inner[start..]);
    }
    parts
}

/// An argument as the user reads it: a literal's text, a `format!`'s
/// template with `<name>` for each argument, or `…` for anything computed.
fn text(arg: &str) -> String {
    let mut a = arg.trim().trim_start_matches('&').trim();
    for suffix in [".into()", ".to_string()", ".to_owned()"] {
        a = a.strip_suffix(suffix).unwrap_or(a).trim();
    }
    if a.starts_with('"') {
        return literal(a).unwrap_or_else(|| COMPUTED.into());
    }
    if let Some(inner) = a.strip_prefix("format!(").and_then(|s| s.strip_suffix(')')) {
        let parts = split_top(inner);
        let Some(template) = parts.first().and_then(|t| literal(t.trim())) else {
            return COMPUTED.into();
        };
        let mut positional = parts[1..].iter().map(|p| p.trim().to_string());
        return placeholders(&template, &mut positional);
    }
    COMPUTED.into()
}

/// The text of a string literal (with a trailing `\` line continuation joined).
fn literal(s: &str) -> Option<String> {
    let end = string_end(s.as_bytes(), 0)?;
    let raw = &s[1..end];
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push(' '),
            Some('\n') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(c) => out.push(c),
            None => {}
        }
    }
    Some(out)
}

/// `{name}` and `{}` of a format template as `<name>`; `{{` as `{`.
fn placeholders(template: &str, positional: &mut dyn Iterator<Item = String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(after) = tail.strip_prefix('}') {
            out.push('}');
            rest = after;
            continue;
        }
        let close = tail.find('}').unwrap_or(tail.len() - 1);
        let spec = &tail[1..close];
        let name = spec.split(':').next().unwrap_or("");
        let name = if name.is_empty() {
            positional.next().unwrap_or_default()
        } else if name.chars().all(|c| c.is_ascii_digit()) {
            // A tuple variant's field: what it holds is in the text around it.
            "detail".to_string()
        } else {
            name.to_string()
        };
        out.push_str(&format!("<{}>", pretty(&name)));
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A placeholder's expression as a short name: `r.target` → `target`,
/// `names.join(", ")` → `names`.
fn pretty(expr: &str) -> String {
    let e = expr.trim().trim_start_matches(['&', '*']);
    let head = e.split(['(', '[']).next().unwrap_or(e);
    let mut parts: Vec<&str> = head.split('.').filter(|p| !p.is_empty()).collect();
    // `names.join(", ")`, `limit.as_millis()`: the value, not the method.
    if head.len() < e.len() && parts.len() > 1 {
        parts.pop();
    }
    parts.last().copied().unwrap_or(head).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_literals_and_formats_become_rows() {
        let src = r#"
fn issue(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> Issue {
    Issue { field: field.into(), problem: problem.into(), fix: fix.into() }
}
fn f() {
    errors.push(issue(
        "spec.targetRef.kind",
        format!("`{kind}` is not supported, {}", a.b(1, 2)),
        "Fledge rolls out Deployments: set kind: Deployment",
    ));
    let x = BadReference {
        field: "spec.autoscalerRef.name".into(),
        problem: format!("HPA {}.{} not found", r.target, ns),
        fix: "create the HPA or remove autoscalerRef".into(),
    };
}
#[cfg(test)]
mod tests { fn t() { issue("a", "b", "c"); } }
"#;
        let e = entries(src);
        assert_eq!(
            e,
            [
                Entry {
                    field: "spec.targetRef.kind".into(),
                    problem: "`<kind>` is not supported, <a>".into(),
                    fix: "Fledge rolls out Deployments: set kind: Deployment".into(),
                },
                Entry {
                    field: "spec.autoscalerRef.name".into(),
                    problem: "HPA <target>.<ns> not found".into(),
                    fix: "create the HPA or remove autoscalerRef".into(),
                },
            ]
        );
    }

    /// The quoted CamelCase word right after each `prefix` in `src` (before its tests).
    fn quoted_after(src: &str, prefix: &str) -> Vec<String> {
        let src = src.split("#[cfg(test)]").next().unwrap_or(src);
        src.match_indices(prefix)
            .filter_map(|(i, _)| {
                let rest = src[i + prefix.len()..].trim_start().strip_prefix('"')?;
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                (rest[word.len()..].starts_with('"')
                    && word.starts_with(|c: char| c.is_ascii_uppercase()))
                .then_some(word)
            })
            .collect()
    }

    /// docs/troubleshooting.md explains every Event reason, condition reason
    /// and phase the code can write.
    #[test]
    fn troubleshooting_names_every_reason() {
        let sources: &[(&str, &[&str])] = &[
            (
                include_str!("../core/machine.rs"),
                &["t.normal(", "t.warning(", "reason:"],
            ),
            (include_str!("../core/mod.rs"), &["reason:"]),
            (
                include_str!("../operator/reconcile.rs"),
                &[
                    "true,",
                    "false,",
                    "SHADOW_DISAGREEMENT: &str =",
                    "set_condition(VALID, \"True\",",
                ],
            ),
            (include_str!("../operator/reconcile/doing.rs"), &["true,"]),
            (
                include_str!("../operator/reconcile/finalizer.rs"),
                &["false,"],
            ),
            (
                include_str!("../operator/reconcile/refusal.rs"),
                &["set_condition(VALID, \"False\","],
            ),
            (include_str!("../notify/alerts.rs"), &["true,"]),
            (
                include_str!("../operator/switch.rs"),
                &[": &str = ", "reason: ", "\"False\","],
            ),
            (include_str!("../operator/policies/fetch.rs"), &["fail("]),
            (
                include_str!("../operator/policies/mod.rs"),
                &["(\"True\",", "map_err(|i| (", "map_err(|e| (", "Err(("],
            ),
        ];
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/troubleshooting.md"),
        )
        .unwrap();
        let mut reasons: Vec<String> = Vec::new();
        for (src, prefixes) in sources {
            for p in *prefixes {
                reasons.extend(quoted_after(src, p));
            }
        }
        // The phases, which are the Promoted condition's reasons.
        let status = include_str!("../operator/status.rs");
        let parse = status.split("pub fn parse_phase").nth(1).unwrap();
        let parse = parse.split("\n}").next().unwrap();
        reasons.extend(quoted_after(parse, "| "));
        reasons.extend(quoted_after(parse, "\n        "));
        reasons.sort();
        reasons.dedup();
        // The scan must find what it looks for, or the check below proves nothing.
        for known in [
            "Halt",
            "NewRevision",
            "Finalising",
            "Loaded",
            "InvalidSpec",
            "ShadowDisagreement",
            "DigestMismatch",
            "CapabilityMissing",
            "Terminated",
            "Alert",
            "RetirePending",
            "Cancelled",
            "Retired",
        ] {
            assert!(
                reasons.iter().any(|r| r == known),
                "the scan missed {known}: {reasons:?}"
            );
        }
        let missing: Vec<&String> = reasons
            .iter()
            .filter(|r| !doc.contains(&format!("| `{r}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/troubleshooting.md has no row for {missing:?}: add one (`| `Reason` | ...`)"
        );
    }

    /// Every source listed yields rows: a file whose errors moved elsewhere
    /// shows up here instead of quietly dropping out of the page.
    #[test]
    fn error_attributes_become_rows() {
        let src = "enum E {\n    /// Doc.\n    #[error(\n        \"over {} ms; \\\n         raise it\",\n        limit.as_millis()\n    )]\n    Timeout { limit: u64 },\n    #[error(\"trapped: {message}\")]\n    Trap { message: String },\n}";
        assert_eq!(
            variants(src),
            [
                (
                    "Timeout".to_string(),
                    "over <limit> ms; raise it".to_string()
                ),
                ("Trap".to_string(), "trapped: <message>".to_string()),
            ]
        );
    }

    #[test]
    fn every_source_has_errors() {
        for (heading, _, file, src) in ENUMS {
            assert!(
                !variants(src).is_empty(),
                "{heading} ({file}): no errors found"
            );
        }
        for (heading, file, src) in SOURCES {
            assert!(
                !entries(src).is_empty(),
                "{heading} ({file}): no errors found"
            );
        }
    }
}
