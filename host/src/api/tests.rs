//! The types read every field of Flagger's schemas and write back exactly what
//! was written: no field lost, no default injected, no number retyped.
use super::*;
use serde_json::Value;

const EVERY_FIELD: &str = include_str!("every-field.yaml");

fn round_trip<T: serde::de::DeserializeOwned + Serialize>(doc: &Value) -> Value {
    let typed: T = yaml::typed(doc).unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_value(&typed).expect("serializes")
}

#[test]
fn every_schema_field_reads_and_writes_back_unchanged() {
    let docs = yaml::documents(EVERY_FIELD).expect("parses");
    assert_eq!(docs.len(), 3);
    for doc in &docs {
        let back = match doc["kind"].as_str() {
            Some("Canary") => round_trip::<Canary>(doc),
            Some("MetricTemplate") => round_trip::<MetricTemplate>(doc),
            Some("AlertProvider") => round_trip::<AlertProvider>(doc),
            other => panic!("unexpected kind {other:?}"),
        };
        assert_eq!(&back, doc, "{}", doc["kind"]);
    }
}

#[test]
fn the_examples_write_back_exactly_as_written() {
    for text in [
        include_str!("../../../examples/podinfo/canary.yaml"),
        include_str!("../../../examples/podinfo/canary-ab-header.yaml"),
        include_str!("../../../examples/podinfo/canary-ab-cookie.yaml"),
    ] {
        for doc in yaml::documents(text).expect("parses") {
            assert_eq!(round_trip::<Canary>(&doc), doc);
        }
    }
    // Explicit defaults stay, absent fields stay absent, integers stay integers.
    let doc = serde_json::json!({
        "spec": {"skipAnalysis": false, "analysis": {"stepWeights": [],
                 "metrics": [{"name": "m", "thresholdRange": {"min": 99, "max": 99.5}}]}}
    });
    assert_eq!(round_trip::<Canary>(&doc), doc);
}
