//! End-to-end cases, most of them taken from Consul's filtering
//! documentation (`website/content/api-docs/features/filtering.mdx`).

use serde_json::{json, Value};

use super::*;

fn ids(filter: &str, values: &[Value], key: &str) -> Vec<String> {
    let filter = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter:?}: {e}"));
    filter_values(&filter, values.to_vec())
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `/v1/agent/services` from the docs, as a list of its values.
fn agent_services() -> Vec<Value> {
    vec![
        json!({
            "ID": "redis1", "Service": "redis", "Tags": ["primary", "production"],
            "Meta": {"env": "production", "foo": "bar"}, "Port": 1234, "Address": "",
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false
        }),
        json!({
            "ID": "redis2", "Service": "redis", "Tags": ["secondary", "production"],
            "Meta": {"env": "production", "foo": "bar"}, "Port": 1235, "Address": "",
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false
        }),
        json!({
            "ID": "redis3", "Service": "redis", "Tags": ["primary", "qa"],
            "Meta": {"env": "qa"}, "Port": 1234, "Address": "",
            "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false
        }),
    ]
}

/// `/v1/catalog/service/api-internal` from the docs.
fn catalog_service() -> Vec<Value> {
    let entry = |id: &str, node: &str, meta: Value, tags: Value, env: &str| {
        json!({
            "ID": id, "Node": node, "Address": "198.18.0.1", "Datacenter": "dc1",
            "TaggedAddresses": null, "NodeMeta": meta, "ServiceKind": "",
            "ServiceID": "api-internal", "ServiceName": "api-internal",
            "ServiceTags": tags, "ServiceAddress": "",
            "ServiceWeights": {"Passing": 1, "Warning": 1},
            "ServiceMeta": {"environment": env}, "ServicePort": 9090,
            "ServiceEnableTagOverride": false, "ServiceProxy": {}, "ServiceConnect": {},
            "CreateIndex": 30, "ModifyIndex": 30
        })
    };
    vec![
        entry(
            "b4f64e8c",
            "node-1",
            json!({"agent": "true", "arch": "i386", "os": "darwin"}),
            json!(["tag"]),
            "qa",
        ),
        entry(
            "b4faf93a",
            "node-2",
            json!({"arch": "arm", "os": "linux"}),
            json!(["test", "tag"]),
            "production",
        ),
        entry(
            "b4fbe7f4",
            "node-4",
            json!({"arch": "i386", "os": "freebsd"}),
            json!([]),
            "qa",
        ),
    ]
}

/// `/v1/health/node/node-1` from the docs.
fn node_checks() -> Vec<Value> {
    vec![
        json!({
            "Node": "node-1", "CheckID": "node-health", "Name": "Node level check",
            "Status": "critical", "Notes": "", "Output": "", "ServiceID": "",
            "ServiceName": "", "ServiceTags": [], "Definition": {},
            "CreateIndex": 13, "ModifyIndex": 13
        }),
        json!({
            "Node": "node-1", "CheckID": "svc-web-health", "Name": "Service level check - web",
            "Status": "warning", "Notes": "", "Output": "", "ServiceID": "",
            "ServiceName": "web", "ServiceTags": [], "Definition": {},
            "CreateIndex": 18, "ModifyIndex": 18
        }),
    ]
}

/// `/v1/health/service/web`: node, service and an array of checks per entry.
fn health_service() -> Vec<Value> {
    let entry = |node: &str, statuses: &[&str]| {
        let checks: Vec<Value> = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"Node": node, "CheckID": format!("c{i}"), "Status": s}))
            .collect();
        json!({
            "Node": {"Node": node, "Address": "10.0.0.1", "Meta": {"rack": "r1"}},
            "Service": {"ID": "web", "Service": "web", "Tags": ["v1"], "Port": 80,
                        "Meta": {"version": "1.2", "foo-bar": "baz"}},
            "Checks": checks
        })
    };
    vec![
        json!(entry("n1", &["passing", "passing"])),
        json!(entry("n2", &["passing", "critical"])),
        json!(entry("n3", &[])),
    ]
}

fn node_names(filter: &str) -> Vec<String> {
    let filter = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter:?}: {e}"));
    filter_values(&filter, health_service())
        .iter()
        .map(|v| v["Node"]["Node"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn docs_agent_services_example() {
    assert_eq!(
        ids("Meta.env == \"qa\"", &agent_services(), "ID"),
        ["redis3"]
    );
}

#[test]
fn docs_catalog_example() {
    assert_eq!(
        ids("NodeMeta.os == \"linux\"", &catalog_service(), "Node"),
        ["node-2"]
    );
}

#[test]
fn docs_health_node_example() {
    assert_eq!(
        ids("ServiceName != \"\"", &node_checks(), "CheckID"),
        ["svc-web-health"]
    );
}

#[test]
fn docs_selector_forms_agree() {
    let values = catalog_service();
    let dotted = ids("ServiceMeta.environment == qa", &values, "Node");
    let indexed = ids("ServiceMeta[\"environment\"] == qa", &values, "Node");
    let pointer = ids("\"/ServiceMeta/environment\" == qa", &values, "Node");
    assert_eq!(dotted, ["node-1", "node-4"]);
    assert_eq!(dotted, indexed);
    assert_eq!(dotted, pointer);
}

#[test]
fn agent_services_more() {
    let v = agent_services();
    assert_eq!(ids("primary in Tags", &v, "ID"), ["redis1", "redis3"]);
    assert_eq!(
        ids("Tags contains \"production\"", &v, "ID"),
        ["redis1", "redis2"]
    );
    assert_eq!(ids("\"qa\" not in Tags", &v, "ID"), ["redis1", "redis2"]);
    assert_eq!(ids("Port == 1235", &v, "ID"), ["redis2"]);
    assert_eq!(ids("Port != 1234", &v, "ID"), ["redis2"]);
    assert_eq!(ids("EnableTagOverride == false", &v, "ID").len(), 3);
    assert_eq!(ids("Meta.foo is empty", &v, "ID"), ["redis3"]);
    assert_eq!(ids("foo in Meta", &v, "ID"), ["redis1", "redis2"]);
    assert_eq!(ids("Address is empty", &v, "ID").len(), 3);
    assert_eq!(ids("ID matches \"[23]$\"", &v, "ID"), ["redis2", "redis3"]);
    assert_eq!(ids("Weights.Passing == 1", &v, "ID").len(), 3);
    assert_eq!(
        ids(
            "Service == redis and (Meta.env == qa or secondary in Tags)",
            &v,
            "ID"
        ),
        ["redis2", "redis3"]
    );
    assert_eq!(
        ids("not (primary in Tags) or Meta.env == qa", &v, "ID"),
        ["redis2", "redis3"]
    );
}

#[test]
fn catalog_more() {
    let v = catalog_service();
    assert_eq!(ids("ServiceTags is empty", &v, "Node"), ["node-4"]);
    assert_eq!(ids("test in ServiceTags", &v, "Node"), ["node-2"]);
    assert_eq!(ids("NodeMeta.agent == true", &v, "Node"), ["node-1"]);
    assert_eq!(
        ids("TaggedAddresses.lan == x", &v, "Node"),
        Vec::<String>::new()
    );
    assert_eq!(ids("TaggedAddresses is empty", &v, "Node").len(), 3);
    assert_eq!(ids("ServiceProxy is empty", &v, "Node").len(), 3);
    assert_eq!(ids("ServicePort == 9090", &v, "Node").len(), 3);
    assert_eq!(ids("NoSuchField == x", &v, "Node"), Vec::<String>::new());
    assert_eq!(ids("NoSuchField != x", &v, "Node").len(), 3);
}

#[test]
fn health_service_walks_through_checks() {
    assert_eq!(node_names("Checks.Status == critical"), ["n2"]);
    assert_eq!(node_names("Checks.Status == passing"), ["n1", "n2"]);
    assert_eq!(node_names("Checks.Status != passing"), ["n2"]);
    assert_eq!(node_names("not Checks.Status == critical"), ["n1", "n3"]);
    assert_eq!(node_names("Checks is empty"), ["n3"]);
    assert_eq!(node_names("Checks.0.Status == passing"), ["n1", "n2"]);
    assert_eq!(node_names("Checks.1.Status == critical"), ["n2"]);
    assert_eq!(node_names("Service.Meta.version == \"1.2\"").len(), 3);
    assert_eq!(node_names("Service.Meta[\"foo-bar\"] == baz").len(), 3);
    assert_eq!(
        node_names("Node.Meta.rack == r1 and v1 in Service.Tags").len(),
        3
    );
    assert_eq!(node_names("Service.Port == 80").len(), 3);
}

#[test]
fn filter_api() {
    let filter: Filter = "Service == web".parse().unwrap();
    assert_eq!(filter.as_str(), "Service == web");
    assert_eq!(filter.to_string(), "Service == web");
    let copy = filter.clone();
    assert!(copy.matches(&json!({"Service": "web"})));
    assert!(!copy.matches(&json!({"Service": "db"})));
    assert!(!copy.matches(&json!("web")));
    assert!(!format!("{filter:?}").is_empty());
    assert!(filter_values(&filter, Vec::new()).is_empty());

    fn shareable<T: Send + Sync + Clone + fmt::Debug>() {}
    shareable::<Filter>();
    shareable::<FilterError>();
}

#[test]
fn errors_carry_offsets() {
    let err = Filter::parse("Service == web and").unwrap_err();
    assert_eq!(err.offset(), 18);
    assert_eq!(
        err.to_string(),
        "expected a selector, a value, `not` or `(` at byte 18, found end of input"
    );
    assert!(Filter::parse("").is_err());
    assert!(Filter::parse("Name matches \"[\"").is_err());
}
