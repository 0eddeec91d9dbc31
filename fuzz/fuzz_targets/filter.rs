//! `filter=` expressions: any text parses as a [`Filter`] or is refused with
//! an offset inside the text, and a parsed filter evaluates against a fixed
//! `/v1/health/service` entry without a panic. `not ( E )` matches exactly
//! where `E` does not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mesh_filter::Filter;
use serde_json::{json, Value};

/// A health entry with every JSON type, nested arrays and odd keys.
fn record() -> &'static Value {
    static RECORD: OnceLock<Value> = OnceLock::new();
    RECORD.get_or_init(|| {
        json!({
            "Node": {"Node": "node1", "Address": "10.0.0.1", "Datacenter": "dc1",
                     "Meta": {"rack": "r1", "foo-bar": "baz", "": "empty"}},
            "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary", "v1", ""],
                        "Port": 8080, "Weights": {"Passing": 1, "Warning": 1},
                        "EnableTagOverride": false, "Meta": {"version": "v1"},
                        "Address": "", "Proxy": null},
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
                {"CheckID": "service:web-1", "Status": "critical", "Output": "HTTP 500\n",
                 "ServiceTags": ["primary"], "Interval": "10s"}
            ],
            "Score": -0.5,
            "Big": 18446744073709551615u64
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(expr) = std::str::from_utf8(data) else {
        return;
    };
    let filter = match Filter::parse(expr) {
        Ok(f) => f,
        Err(e) => {
            assert!(
                e.offset() <= expr.len(),
                "offset {} past the end",
                e.offset()
            );
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(filter.as_str(), expr);
    let matched = filter.matches(record());
    let _ = filter.matches(&Value::Null);
    let _ = filter.matches(&record()["Checks"]);
    if let Ok(negated) = Filter::parse(&format!("not ({expr})")) {
        assert_eq!(negated.matches(record()), !matched, "not ({expr})");
    }
});
