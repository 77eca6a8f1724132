use super::*;
use crate::api::Canary;

const GUIDE: &str = include_str!("../../../../examples/podinfo/canary.yaml");

fn canary(text: &str) -> Result<Canary, Issue> {
    let doc = documents(text)?.into_iter().next().expect("a document");
    typed(&doc)
}

fn error(text: &str) -> String {
    canary(text).expect_err("refused").to_string()
}

#[test]
fn misspelled_fields_are_refused_with_the_closest_known_field() {
    assert_eq!(
        error(&GUIDE.replace("  analysis:", "  analysys:")),
        "spec.analysys: unknown field; did you mean spec.analysis?"
    );
    assert_eq!(
        error(&GUIDE.replace("maxWeight: 50", "maxWieght: 50")),
        "spec.analysis.maxWieght: unknown field; did you mean spec.analysis.maxWeight?"
    );
    // The deprecated alias is not in Flagger's CRD either.
    assert_eq!(
        error(&GUIDE.replace("  analysis:", "  canaryAnalysis:")),
        "spec.canaryAnalysis: unknown field; did you mean spec.analysis?"
    );
    // Nothing close: the known fields are listed.
    let e = error(&GUIDE.replace("      thresholdRange:\n        min: 99", "      bogus: 1"));
    assert!(
        e.starts_with(
            "spec.analysis.metrics[0].bogus: unknown field; the fields here are name, interval,"
        ),
        "{e}"
    );
    // Inside maps of typed values too (header match comparisons).
    let ab = include_str!("../../../../examples/podinfo/canary-ab-header.yaml");
    let e = error(&ab.replace("exact: \"insider\"", "exakt: \"insider\""));
    assert_eq!(
        e,
        "spec.analysis.match[0].headers.x-canary.exakt: unknown field; did you mean spec.analysis.match[0].headers.x-canary.exact?"
    );
}

#[test]
fn type_errors_name_the_path_what_was_expected_and_what_was_found() {
    assert_eq!(
        error(&GUIDE.replace("maxWeight: 50", "maxWeight: fifty")),
        "spec.analysis.maxWeight: expected an integer, got \"fifty\"; write an integer here"
    );
    assert_eq!(
        error(&GUIDE.replace("port: 9898", "port: [9898]")),
        "spec.service.port: expected an integer, got a list; write an integer here"
    );
    assert_eq!(
        error(&GUIDE.replace("stepWeight: 5", "stepWeight: 5.5")),
        "spec.analysis.stepWeight: expected an integer, got 5.5; write an integer here"
    );
    assert_eq!(
        error(&GUIDE.replace("    timeout: 15s", "    timeout: {seconds: 15}")),
        "spec.service.timeout: expected a string, got a mapping; write a string here"
    );
    let e = error(&GUIDE.replace(
        "progressDeadlineSeconds: 60",
        "progressDeadlineSeconds: 99999999999999999999",
    ));
    assert!(
        e.starts_with("spec.progressDeadlineSeconds: expected an integer, got 1"),
        "{e}"
    );
}

#[test]
fn non_finite_thresholds_are_refused_by_name() {
    for word in [".nan", ".inf", "-.inf", ".NaN"] {
        let e = error(&GUIDE.replace("min: 99", &format!("min: {word}")));
        assert!(
            e.starts_with("spec.analysis.metrics[0].thresholdRange.min: \"")
                && e.contains("is not a finite number; use a finite number"),
            "{word}: {e}"
        );
    }
}

#[test]
fn duplicate_keys_are_refused_with_their_line() {
    let text = GUIDE.replace(
        "    maxWeight: 50\n",
        "    maxWeight: 50\n    maxWeight: 100\n",
    );
    let e = error(&text);
    assert!(e.starts_with("line "), "{e}");
    assert!(
        e.contains("duplicate key `maxWeight`; each key may appear once"),
        "{e}"
    );
}

#[test]
fn multi_document_streams_keep_every_document() {
    let docs = documents("a: 1\n---\n---\nb: 2\n").expect("parses");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["b"], 2);
}

#[test]
fn deep_nesting_and_alias_bombs_are_refused() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = documents(&deep).expect_err("too deep").to_string();
    assert!(e.contains("simplify the input"), "{e}");
    let mut block = String::new();
    for i in 0..200 {
        block.push_str(&" ".repeat(i));
        block.push_str("a:\n");
    }
    let e = documents(&block).expect_err("too deep").to_string();
    assert!(e.contains("nested at most 64 levels"), "{e}");
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    assert!(documents(&bomb).is_err());
}

#[test]
fn suggestions_are_close_spellings_or_contained_names() {
    let known: Vec<String> = ["analysis", "service", "targetRef", "provider"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(closest("analysys", &known), Some("analysis"));
    assert_eq!(closest("Service", &known), Some("service"));
    assert_eq!(closest("canaryAnalysis", &known), Some("analysis"));
    assert_eq!(closest("xyz", &known), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
