//! The compiler against Consul's documented compilations, and the write
//! checks built on it.

use super::proxy::{default_targets, to_proxy_chain};
use super::*;
use crate::config_entry::parse;
use crate::state::{Changes, StateData};
use serde_json::{json, Value};

const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";

fn state(entries: &[Value]) -> StateData {
    let mut d = StateData::default();
    let mut changes = Changes::default();
    for (i, e) in entries.iter().enumerate() {
        let e = parse(e.clone()).unwrap_or_else(|err| panic!("{err}"));
        d.config_set(i as u64 + 1, &e, None, &mut changes);
    }
    d
}

fn compile_in(
    d: &StateData,
    service: &str,
    override_protocol: Option<&str>,
) -> Result<CompiledChain, ChainError> {
    let entries = ChainEntries::from_state(d);
    compile(&CompileRequest {
        service,
        datacenter: "dc1",
        trust_domain: TRUST_DOMAIN,
        override_protocol,
        override_connect_timeout: None,
        entries: &entries,
    })
}

fn chain(entries: &[Value], service: &str) -> Result<CompiledChain, ChainError> {
    compile_in(&state(entries), service, None)
}

fn http(service: &str) -> Value {
    json!({"Kind": "service-defaults", "Name": service, "Protocol": "http"})
}

fn versions(service: &str) -> Value {
    json!({"Kind": "service-resolver", "Name": service, "Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"},
        "v2": {"Filter": "Service.Meta.version == v2", "OnlyPassing": true}}})
}

fn split_90_10(service: &str) -> Value {
    json!({"Kind": "service-splitter", "Name": service, "Splits": [
        {"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]})
}

fn target_json(id: &str, service: &str, subset: Value) -> Value {
    json!({"ID": id, "Service": service, "Namespace": "default", "Datacenter": "dc1",
        "MeshGateway": {}, "Subset": subset, "ConnectTimeout": "5s",
        "SNI": format!("{id}.internal.{TRUST_DOMAIN}"),
        "Name": format!("{id}.internal.{TRUST_DOMAIN}")})
}

#[test]
fn no_entries_give_one_default_resolver() {
    let c = chain(&[], "web").unwrap();
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        json!({
            "ServiceName": "web", "Namespace": "default", "Datacenter": "dc1",
            "Default": true, "Protocol": "tcp",
            "StartNode": "resolver:web.default.dc1",
            "Nodes": {"resolver:web.default.dc1": {"Type": "resolver", "Name": "web.default.dc1",
                "Resolver": {"Default": true, "ConnectTimeout": "5s", "Target": "web.default.dc1"}}},
            "Targets": {"web.default.dc1": target_json("web.default.dc1", "web", json!({}))},
        })
    );
}

#[test]
fn a_splitter_leads_to_subset_resolvers() {
    let c = chain(&[http("web"), versions("web"), split_90_10("web")], "web").unwrap();
    assert_eq!(c.protocol, "http");
    assert!(!c.default);
    assert_eq!(c.start_node, "splitter:web");
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(
        json["Nodes"]["splitter:web"],
        json!({"Type": "splitter", "Name": "web", "Splits": [
            {"Definition": {"Weight": 90, "ServiceSubset": "v1"}, "Weight": 90,
             "NextNode": "resolver:v1.web.default.dc1"},
            {"Definition": {"Weight": 10, "ServiceSubset": "v2"}, "Weight": 10,
             "NextNode": "resolver:v2.web.default.dc1"}]})
    );
    assert_eq!(
        json["Nodes"]["resolver:v1.web.default.dc1"]["Resolver"],
        json!({"ConnectTimeout": "5s", "Target": "v1.web.default.dc1"})
    );
    let mut v1 = target_json(
        "v1.web.default.dc1",
        "web",
        json!({"Filter": "Service.Meta.version == v1"}),
    );
    v1["ServiceSubset"] = "v1".into();
    assert_eq!(json["Targets"]["v1.web.default.dc1"], v1);
    assert_eq!(
        json["Targets"]["v2.web.default.dc1"]["Subset"]["OnlyPassing"],
        true
    );
    assert_eq!(c.targets.len(), 2, "the unsplit target is not kept");

    let proxy = to_proxy_chain(&c, |t| match t.service_subset.as_str() {
        "v1" => vec!["10.0.0.1:21000".parse().unwrap()],
        _ => vec!["10.0.0.2:21000".parse().unwrap()],
    });
    assert_eq!(proxy.routes.len(), 1);
    let weights: Vec<(u32, &str)> = proxy.routes[0]
        .splits
        .iter()
        .map(|s| (s.weight, s.target.as_str()))
        .collect();
    assert_eq!(
        weights,
        vec![(9000, "v1.web.default.dc1"), (1000, "v2.web.default.dc1")]
    );
    assert_eq!(proxy.targets["v2.web.default.dc1"].subset, "v2");
    assert_eq!(
        proxy.targets["v1.web.default.dc1"].endpoints,
        vec!["10.0.0.1:21000".parse().unwrap()]
    );
    assert_eq!(default_targets(&proxy), vec!["v1.web.default.dc1"]);
}

#[test]
fn a_router_routes_then_splits_then_resolves() {
    let router = json!({"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/admin"}},
         "Destination": {"Service": "admin", "PrefixRewrite": "/", "RequestTimeout": "15s"}},
        {"Match": {"HTTP": {"Header": [{"Name": "x-debug", "Exact": "1"}]}},
         "Destination": {"ServiceSubset": "v2", "NumRetries": 5,
             "RetryOnConnectFailure": true, "RetryOnStatusCodes": [503]}}]});
    let entries = [
        json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
        versions("web"),
        split_90_10("web"),
        router,
    ];
    let c = chain(&entries, "web").unwrap();
    assert_eq!(c.protocol, "http", "inherited from proxy-defaults");
    assert_eq!(c.start_node, "router:web");
    let routes = &c.nodes["router:web"].routes;
    let next: Vec<&str> = routes.iter().map(|r| r.next_node.as_str()).collect();
    assert_eq!(
        next,
        vec![
            "resolver:admin.default.dc1",
            "resolver:v2.web.default.dc1",
            "splitter:web"
        ]
    );
    assert_eq!(
        serde_json::to_value(&routes[2].definition).unwrap(),
        json!({"Match": {"HTTP": {"PathPrefix": "/"}}, "Destination": {"Service": "web"}})
    );
    assert!(
        c.nodes["resolver:admin.default.dc1"]
            .resolver
            .as_ref()
            .unwrap()
            .default
    );

    let proxy = to_proxy_chain(&c, |_| Vec::new());
    assert_eq!(proxy.routes.len(), 3);
    let admin = &proxy.routes[0];
    assert_eq!(admin.r#match.path_prefix.as_deref(), Some("/admin"));
    assert_eq!(admin.prefix_rewrite.as_deref(), Some("/"));
    assert_eq!(
        admin.request_timeout,
        Some(std::time::Duration::from_secs(15))
    );
    assert_eq!(admin.splits[0].weight, 10_000);
    assert_eq!(admin.splits[0].target, "admin.default.dc1");
    let debug = &proxy.routes[1];
    assert_eq!(debug.num_retries, 5);
    assert!(debug.retry_on_connect_failure);
    assert_eq!(debug.retry_on_status_codes, vec![503]);
    assert_eq!(debug.splits[0].target, "v2.web.default.dc1");
    let last = &proxy.routes[2];
    assert!(last.r#match.is_empty(), "the catch-all matches everything");
    assert_eq!(last.splits.len(), 2);
    assert_eq!(proxy.targets.len(), 3);
}

#[test]
fn redirects_are_followed_and_loops_refused() {
    let c = chain(
        &[
            json!({"Kind": "service-resolver", "Name": "web", "Redirect": {"Service": "web-next"}}),
            json!({"Kind": "service-resolver", "Name": "web-next", "DefaultSubset": "blue",
                 "Subsets": {"blue": {"Filter": "Service.Meta.color == blue"}}}),
        ],
        "web",
    )
    .unwrap();
    assert_eq!(c.start_node, "resolver:blue.web-next.default.dc1");
    assert!(!c.default);
    assert_eq!(
        c.targets.keys().collect::<Vec<_>>(),
        vec!["blue.web-next.default.dc1"]
    );

    let dc = chain(
        &[json!({"Kind": "service-resolver", "Name": "web", "Redirect": {"Datacenter": "dc2"}})],
        "web",
    )
    .unwrap();
    assert_eq!(dc.start_node, "resolver:web.default.dc2");

    let err = chain(
        &[
            json!({"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"}}),
            json!({"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "a"}}),
        ],
        "a",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "detected circular resolver redirect: [a.default.dc1 -> b.default.dc1 -> a.default.dc1]"
    );
}

#[test]
fn failover_targets_are_resolved() {
    let c = chain(
        &[
            json!({"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
                 "Subsets": {"v1": {}, "v2": {}},
                 "Failover": {"v1": {"ServiceSubset": "v2"}, "*": {"Service": "backup"}}}),
            json!({"Kind": "service-resolver", "Name": "backup", "ConnectTimeout": "2s"}),
        ],
        "web",
    )
    .unwrap();
    let resolver = c.nodes["resolver:v1.web.default.dc1"]
        .resolver
        .as_ref()
        .unwrap();
    assert_eq!(
        resolver.failover.as_ref().unwrap().targets,
        vec!["v2.web.default.dc1"]
    );
    assert!(c.targets.contains_key("v2.web.default.dc1"));

    let dcs = chain(
        &[
            json!({"Kind": "service-resolver", "Name": "web", "ConnectTimeout": "15s",
                 "Failover": {"*": {"Datacenters": ["dc3", "dc1", "dc4"]}}}),
        ],
        "web",
    )
    .unwrap();
    let json = serde_json::to_value(&dcs).unwrap();
    assert_eq!(
        json["Nodes"]["resolver:web.default.dc1"]["Resolver"],
        json!({"ConnectTimeout": "15s", "Target": "web.default.dc1",
               "Failover": {"Targets": ["web.default.dc3", "web.default.dc4"]}}),
        "a datacenter never fails over to itself"
    );
    assert_eq!(dcs.targets.len(), 3);
    let proxy = to_proxy_chain(&dcs, |_| Vec::new());
    assert_eq!(
        default_targets(&proxy),
        vec!["web.default.dc1", "web.default.dc3", "web.default.dc4"]
    );
    assert_eq!(
        proxy.targets["web.default.dc1"].connect_timeout,
        Some(std::time::Duration::from_secs(15))
    );
}

#[test]
fn protocols_decide_what_is_allowed() {
    // A splitter on a tcp service.
    let err = chain(&[versions("web"), split_90_10("web")], "web").unwrap_err();
    assert_eq!(
        err.to_string(),
        "discovery chain \"web\" uses a protocol \"tcp\" that does not permit advanced routing or splitting behavior"
    );
    // service-defaults wins over proxy-defaults.
    let tcp = chain(
        &[
            json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}),
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}),
        ],
        "web",
    )
    .unwrap();
    assert_eq!(tcp.protocol, "tcp");
    // All services in one chain speak one protocol.
    let err = chain(
        &[
            http("web"),
            json!({"Kind": "service-splitter", "Name": "web", "Splits": [
              {"Weight": 50}, {"Weight": 50, "Service": "legacy"}]}),
        ],
        "web",
    )
    .unwrap_err();
    assert!(
        matches!(err, ChainError::InconsistentProtocols { .. }),
        "{err}"
    );
    // An override to tcp drops the splitter.
    let d = state(&[http("web"), versions("web"), split_90_10("web")]);
    let c = compile_in(&d, "web", Some("tcp")).unwrap();
    assert_eq!(c.protocol, "tcp");
    assert_eq!(c.start_node, "resolver:web.default.dc1");
    assert_eq!(c.customization_hash.len(), 8);
}

#[test]
fn unknown_subsets_and_splitter_loops_are_refused() {
    let err = chain(
        &[
            http("web"),
            versions("web"),
            json!({"Kind": "service-splitter", "Name": "web", "Splits": [
              {"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "ServiceSubset": "v3"}]}),
        ],
        "web",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service \"web\" does not have a subset named \"v3\""
    );

    let err = chain(
        &[
            http("a"),
            http("b"),
            json!({"Kind": "service-splitter", "Name": "a", "Splits": [
              {"Weight": 50}, {"Weight": 50, "Service": "b"}]}),
            json!({"Kind": "service-splitter", "Name": "b", "Splits": [
              {"Weight": 50}, {"Weight": 50, "Service": "a"}]}),
        ],
        "a",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "detected circular reference: [splitter:a -> splitter:b -> splitter:a]"
    );
}

#[test]
fn nested_splitters_are_flattened() {
    let c = chain(
        &[
            http("web"),
            http("web-new"),
            versions("web-new"),
            json!({"Kind": "service-splitter", "Name": "web", "Splits": [
              {"Weight": 50, "RequestHeaders": {"Set": {"x-from": "web"}}},
              {"Weight": 50, "Service": "web-new"}]}),
            json!({"Kind": "service-splitter", "Name": "web-new", "Splits": [
              {"Weight": 33.33, "ServiceSubset": "v1"}, {"Weight": 66.67, "ServiceSubset": "v2"}]}),
        ],
        "web",
    )
    .unwrap();
    assert!(!c.nodes.contains_key("splitter:web-new"), "flattened away");
    let splits: Vec<(f64, &str)> = c.nodes["splitter:web"]
        .splits
        .iter()
        .map(|s| (s.weight, s.next_node.as_str()))
        .collect();
    assert_eq!(
        splits,
        vec![
            (50.0, "resolver:web.default.dc1"),
            (16.67, "resolver:v1.web-new.default.dc1"),
            (33.34, "resolver:v2.web-new.default.dc1"),
        ]
    );
    let proxy = to_proxy_chain(&c, |_| Vec::new());
    let weights: Vec<u32> = proxy.routes[0].splits.iter().map(|s| s.weight).collect();
    assert_eq!(weights.iter().sum::<u32>(), 10_000);
    assert_eq!(
        weights,
        vec![4999, 1667, 3334],
        "the remainder goes to the first leg"
    );
    assert_eq!(
        proxy.routes[0].splits[0].request_headers.set["x-from"],
        "web"
    );
}

fn change<'a>(entry: &'a crate::config_entry::ConfigEntry) -> Change<'a> {
    Change {
        kind: &entry.kind,
        name: &entry.name,
        entry: Some(entry),
    }
}

#[test]
fn writes_that_break_a_chain_are_refused() {
    let d = state(&[versions("billing"), http("billing"), split_90_10("billing")]);
    // The stored chain is fine; making the service tcp is not.
    let tcp =
        parse(json!({"Kind": "service-defaults", "Name": "billing", "Protocol": "tcp"})).unwrap();
    let err = validate_write(&d, "dc1", change(&tcp)).unwrap_err();
    assert!(
        err.to_string().contains("does not permit advanced routing"),
        "{err}"
    );
    // Deleting the resolver the splitter's subsets need.
    let delete = Change {
        kind: "service-resolver",
        name: "billing",
        entry: None,
    };
    let err = validate_write(&d, "dc1", delete).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not have a subset named \"v1\""),
        "{err}"
    );
    // A splitter elsewhere that reaches billing's subsets is judged too.
    let web = parse(
        json!({"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 100, "Service": "billing", "ServiceSubset": "v9"}]}),
    )
    .unwrap();
    let with_web = state(&[versions("billing"), http("billing"), http("web")]);
    assert!(validate_write(&with_web, "dc1", change(&web)).is_err());
    // Harmless writes pass.
    let ok =
        parse(json!({"Kind": "service-defaults", "Name": "billing", "Protocol": "http2"})).unwrap();
    validate_write(&d, "dc1", change(&ok)).unwrap();
    let pd =
        parse(json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}}))
            .unwrap();
    validate_write(&d, "dc1", change(&pd)).unwrap();
}

#[test]
fn l7_intentions_need_an_http_service() {
    let l7 = parse(
        json!({"Kind": "service-intentions", "Name": "api", "Sources": [
        {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]}),
    )
    .unwrap();
    let err = validate_write(&state(&[]), "dc1", change(&l7)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service \"api\" has protocol \"tcp\", which is incompatible with L7 intentions permissions"
    );
    let d = state(&[http("api")]);
    validate_write(&d, "dc1", change(&l7)).unwrap();
    // Once the intention exists, api cannot go back to tcp.
    let d = state(&[http("api"), serde_json::to_value(&l7.body).unwrap()]);
    let tcp = parse(json!({"Kind": "service-defaults", "Name": "api", "Protocol": "tcp"})).unwrap();
    assert!(matches!(
        validate_write(&d, "dc1", change(&tcp)),
        Err(ChainError::L7IntentionsNeedHttp { .. })
    ));
}
