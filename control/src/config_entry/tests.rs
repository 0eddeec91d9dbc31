//! Entries from Consul's documentation, in HCL and JSON, and the invalid
//! ones each kind refuses — naming the field.

use super::*;
use serde_json::json;

/// An HCL entry as `mesh config write` reads it.
pub(crate) fn hcl(text: &str) -> Result<ConfigEntry, EntryError> {
    parse(crate::structs::hcl::from_str(text).expect("HCL parses"))
}

/// `base` with the fields of `extra` added (or replaced).
fn merged(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

/// The field an invalid JSON entry is refused for.
fn refused(value: Value) -> String {
    match parse(value) {
        Err(e) => e.field().unwrap_or_default().to_string(),
        Ok(e) => panic!("accepted: {}", e.body),
    }
}

#[test]
fn proxy_defaults_is_global_with_an_opaque_config() {
    let e = hcl(r#"
        Kind = "proxy-defaults"
        Name = "global"
        Config {
          protocol                 = "http"
          local_connect_timeout_ms = 1000
          handshake_timeout_ms     = 10000
        }
        MeshGateway {
          Mode = "local"
        }
    "#)
    .unwrap();
    assert_eq!(e.body["Config"]["local_connect_timeout_ms"], 1000);
    assert_eq!(e.body["MeshGateway"]["Mode"], "local");
    let pd: proxy_defaults::ProxyDefaults = decode(&e).unwrap();
    assert_eq!(pd.protocol(), "http");

    let json = parse(json!({"kind": "proxy-defaults", "name": "global",
        "config": {"Protocol_Key": 1}}))
    .unwrap();
    assert_eq!(
        json.body["Config"]["Protocol_Key"], 1,
        "Config keys are kept"
    );

    assert_eq!(
        refused(json!({"Kind": "proxy-defaults", "Name": "web"})),
        "Name"
    );
    assert_eq!(
        refused(json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "udp"}})),
        "Config.protocol"
    );
    assert_eq!(
        refused(json!({"Kind": "proxy-defaults", "Name": "global", "Mode": "sideways"})),
        "Mode"
    );
}

#[test]
fn service_defaults_protocol_and_upstream_defaults() {
    let e = hcl(r#"
        Kind     = "service-defaults"
        Name     = "counting"
        Protocol = "HTTP"
        UpstreamConfig = {
          Defaults = {
            ConnectTimeoutMs = 5000
            Limits = {
              MaxConnections        = 512
              MaxPendingRequests    = 512
              MaxConcurrentRequests = 512
            }
          }
          Overrides = [
            {
              Name             = "dashboard"
              Protocol         = "grpc"
              PassiveHealthCheck = {
                Interval    = "10s"
                MaxFailures = 5
              }
            }
          ]
        }
    "#)
    .unwrap();
    assert_eq!(e.body["Protocol"], "http", "lower-cased");
    let sd: service_defaults::ServiceDefaults = decode(&e).unwrap();
    let up = sd.upstream_config.unwrap();
    assert_eq!(up.for_upstream("dashboard").unwrap().protocol, "grpc");
    assert_eq!(up.for_upstream("other").unwrap().connect_timeout_ms, 5000);

    let snake = parse(
        json!({"kind": "service-defaults", "name": "web", "protocol": "http",
        "meta": {"Owner_Team": "a"}, "local_connect_timeout_ms": 250}),
    )
    .unwrap();
    assert_eq!(snake.body["LocalConnectTimeoutMs"], 250);
    assert_eq!(snake.body["Meta"]["Owner_Team"], "a");

    let base = |extra: Value| {
        refused(merged(
            json!({"Kind": "service-defaults", "Name": "web"}),
            extra,
        ))
    };
    assert_eq!(base(json!({"Protocol": "udp"})), "Protocol");
    assert_eq!(base(json!({"Protocoll": "http"})), "Protocoll");
    assert_eq!(
        base(json!({"UpstreamConfig": {"Overrides": [{"Protocol": "http"}]}})),
        "UpstreamConfig.Overrides[0].Name"
    );
    assert_eq!(
        base(json!({"UpstreamConfig": {"Defaults": {"Name": "x"}}})),
        "UpstreamConfig.Defaults.Name"
    );
    assert_eq!(
        base(json!({"UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": "soon"}}})),
        "UpstreamConfig.Defaults.ConnectTimeoutMs"
    );
    assert_eq!(base(json!({"Namespace": "team-a"})), "Namespace");
    assert_eq!(base(json!({"Meta": {"a": 1}})), "Meta[\"a\"]");
    assert_eq!(
        refused(json!({"Kind": "service-defaults", "Name": "*"})),
        "Name"
    );
}

#[test]
fn service_resolver_subsets_redirect_failover_and_load_balancing() {
    let e = hcl(r#"
        Kind          = "service-resolver"
        Name          = "web"
        DefaultSubset = "v1"
        Subsets = {
          "v1" = {
            Filter = "Service.Meta.version == v1"
          }
          "v2" = {
            Filter      = "Service.Meta.version == v2"
            OnlyPassing = true
          }
        }
        ConnectTimeout = "15s"
        Failover = {
          "*" = {
            Datacenters = ["dc3", "dc1"]
          }
        }
    "#)
    .unwrap();
    assert_eq!(e.body["Subsets"]["v2"]["OnlyPassing"], true);
    assert_eq!(e.body["ConnectTimeout"], "15s");
    assert_eq!(
        e.body["Failover"]["*"]["Datacenters"],
        json!(["dc3", "dc1"])
    );

    let redirect = hcl(r#"
        Kind = "service-resolver"
        Name = "web"
        Redirect {
          Service    = "web"
          Datacenter = "dc2"
        }
    "#)
    .unwrap();
    assert_eq!(redirect.body["Redirect"]["Datacenter"], "dc2");

    let lb = parse(json!({
        "Kind": "service-resolver", "Name": "web",
        "LoadBalancer": {"Policy": "ring_hash",
            "RingHashConfig": {"MinimumRingSize": 1024, "MaximumRingSize": 8192},
            "HashPolicies": [
                {"Field": "cookie", "FieldValue": "foo", "CookieConfig": {"TTL": "1s"}},
                {"SourceIP": true, "Terminal": true}]}}))
    .unwrap();
    let r: service_resolver::ServiceResolver = decode(&lb).unwrap();
    let proxy = r.load_balancer.unwrap().to_proxy();
    assert_eq!(proxy.policy, mesh_proxy::LbPolicy::RingHash);
    assert!(proxy.hash_policies[1].source_ip);

    let base = json!({"Kind": "service-resolver", "Name": "web",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}}});
    let resolver = |extra: Value| refused(merged(base.clone(), extra));
    assert_eq!(
        resolver(json!({"Subsets": {"v1": {"Filter": "Service.Meta.version =="}}})),
        "Subsets[\"v1\"].Filter"
    );
    assert_eq!(resolver(json!({"Subsets": {"V1": {}}})), "Subsets[\"V1\"]");
    assert_eq!(resolver(json!({"DefaultSubset": "v9"})), "DefaultSubset");
    assert_eq!(resolver(json!({"ConnectTimeout": "-5s"})), "ConnectTimeout");
    assert_eq!(
        resolver(json!({"RequestTimeout": "soon"})),
        "RequestTimeout"
    );
    assert_eq!(
        resolver(json!({"Redirect": {"Service": "x"}, "Failover": {"*": {"Service": "y"}}})),
        "Redirect"
    );
    assert_eq!(resolver(json!({"Redirect": {}})), "Redirect");
    assert_eq!(
        resolver(json!({"Redirect": {"ServiceSubset": "v1"}})),
        "Redirect.ServiceSubset"
    );
    assert_eq!(
        resolver(json!({"Redirect": {"Service": "web", "ServiceSubset": "v3"}})),
        "Redirect.ServiceSubset"
    );
    assert_eq!(
        resolver(json!({"Redirect": {"Service": "x", "Peer": "p"}})),
        "Redirect.Peer"
    );
    assert_eq!(
        resolver(json!({"Failover": {"v2": {"Service": "x"}}})),
        "Failover[\"v2\"]"
    );
    assert_eq!(resolver(json!({"Failover": {"*": {}}})), "Failover[\"*\"]");
    assert_eq!(
        resolver(
            json!({"Failover": {"*": {"Datacenters": ["dc2"], "Targets": [{"Datacenter": "dc3"}]}}})
        ),
        "Failover[\"*\"].Targets"
    );
    assert_eq!(
        resolver(json!({"Failover": {"*": {"Targets": [{"ServiceSubset": "v7"}]}}})),
        "Failover[\"*\"].Targets[0].ServiceSubset"
    );
    assert_eq!(
        resolver(json!({"Failover": {"*": {"Datacenters": [""]}}})),
        "Failover[\"*\"].Datacenters"
    );
    assert_eq!(
        resolver(json!({"LoadBalancer": {"Policy": "fastest"}})),
        "LoadBalancer.Policy"
    );
    assert_eq!(
        resolver(
            json!({"LoadBalancer": {"Policy": "random", "HashPolicies": [{"SourceIP": true}]}})
        ),
        "LoadBalancer.HashPolicies"
    );
    assert_eq!(
        resolver(
            json!({"LoadBalancer": {"Policy": "maglev", "HashPolicies": [{"Field": "header"}]}})
        ),
        "LoadBalancer.HashPolicies[0]"
    );
    assert_eq!(
        resolver(json!({"LoadBalancer": {"Policy": "maglev", "RingHashConfig": {}}})),
        "LoadBalancer.RingHashConfig"
    );
}

#[test]
fn service_splitter_weights_sum_to_100() {
    let e = hcl(r#"
        Kind = "service-splitter"
        Name = "billing-api"
        Splits = [
          { Weight = 10, ServiceSubset = "v2" },
          { Weight = 90, ServiceSubset = "v1" },
        ]
    "#)
    .unwrap();
    assert_eq!(
        e.body["Splits"][1],
        json!({"Weight": 90, "ServiceSubset": "v1"})
    );

    // Consul's example with header changes, written with HCL 1 blocks.
    let headers = hcl(r#"
        Kind = "service-splitter"
        Name = "web"
        Splits = [
          {
            Weight        = 50
            Service       = "web"
            ServiceSubset = "v1"
            RequestHeaders {
              Set {
                "x-web-version" = "from-v1"
              }
            }
            ResponseHeaders {
              Set {
                "x-web-version" = "to-v1"
              }
            }
          },
          {
            Weight        = 50
            Service       = "web"
            ServiceSubset = "v2"
          },
        ]
    "#)
    .unwrap();
    assert_eq!(
        headers.body["Splits"][0]["RequestHeaders"]["Set"]["x-web-version"],
        "from-v1"
    );

    let fine = parse(
        json!({"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 33.333, "ServiceSubset": "a"}, {"Weight": 33.333, "ServiceSubset": "b"},
        {"Weight": 33.336, "ServiceSubset": "c"}]}),
    )
    .unwrap();
    assert_eq!(fine.body["Splits"][0]["Weight"], 33.33, "rounded to 0.01");

    let split = |splits: Value| {
        refused(json!({"Kind": "service-splitter", "Name": "web", "Splits": splits}))
    };
    let err = parse(
        json!({"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 60, "ServiceSubset": "v1"}, {"Weight": 30, "ServiceSubset": "v2"}]}),
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("Splits"));
    assert!(
        err.to_string()
            .contains("the sum of all split weights must be 100, not 90"),
        "{err}"
    );
    assert_eq!(split(json!([])), "Splits");
    assert_eq!(
        split(json!([{"Weight": 150}, {"Weight": -50, "Service": "b"}])),
        "Splits[0].Weight"
    );
    assert_eq!(
        split(
            json!([{"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "Service": "web", "ServiceSubset": "v1"}])
        ),
        "Splits[1]"
    );
    assert_eq!(split(json!([{"Weight": "all"}])), "Splits[0].Weight");
    assert_eq!(
        split(json!([{"Weight": 100, "RequestHeaders": {"Set": {"bad header": "1"}}}])),
        "Splits[0].RequestHeaders.Set[\"bad header\"]"
    );
}

#[test]
fn service_router_routes() {
    let e = hcl(r#"
        Kind = "service-router"
        Name = "web"
        Routes = [
          {
            Match {
              HTTP {
                PathPrefix = "/admin"
              }
            }
            Destination {
              Service        = "admin"
              PrefixRewrite  = "/"
              RequestTimeout = "15s"
            }
          },
          {
            Match {
              HTTP {
                Header = [
                  {
                    Name  = "x-debug"
                    Exact = "1"
                  },
                ]
                QueryParam = [
                  {
                    Name    = "canary"
                    Present = true
                  },
                ]
                Methods = ["get", "POST"]
              }
            }
            Destination {
              Service               = "web"
              ServiceSubset         = "canary"
              NumRetries            = 5
              RetryOnConnectFailure = true
              RetryOnStatusCodes    = [401, 409]
              RequestHeaders {
                Add {
                  "X-Canary" = "yes"
                }
              }
            }
          },
        ]
    "#)
    .unwrap();
    let routes = &e.body["Routes"];
    assert_eq!(routes[0]["Destination"]["RequestTimeout"], "15s");
    assert_eq!(
        routes[1]["Match"]["HTTP"]["Methods"],
        json!(["GET", "POST"])
    );
    assert_eq!(
        routes[1]["Destination"]["RequestHeaders"]["Add"]["X-Canary"],
        "yes"
    );
    assert_eq!(
        routes[1]["Match"]["HTTP"]["Header"][0],
        json!({"Name": "x-debug", "Exact": "1", "Present": false, "Invert": false})
    );

    let route = |r: Value| refused(json!({"Kind": "service-router", "Name": "web", "Routes": [r]}));
    assert_eq!(
        route(json!({"Match": {"HTTP": {"PathExact": "admin"}}})),
        "Routes[0].Match.HTTP.PathExact"
    );
    assert_eq!(
        route(json!({"Match": {"HTTP": {"PathPrefix": "/a", "PathExact": "/b"}}})),
        "Routes[0].Match.HTTP"
    );
    assert_eq!(
        route(json!({"Match": {"HTTP": {"PathRegex": "/v[0-9"}}})),
        "Routes[0].Match.HTTP.PathRegex"
    );
    assert_eq!(
        route(json!({"Match": {"HTTP": {"Header": [{"Name": "x", "Regex": "("}]}}})),
        "Routes[0].Match.HTTP.Header[0].Regex"
    );
    assert_eq!(
        route(json!({"Match": {"HTTP": {"Methods": ["YELL"]}}})),
        "Routes[0].Match.HTTP.Methods"
    );
    assert_eq!(
        route(
            json!({"Match": {"HTTP": {"PathRegex": "/a.*"}}, "Destination": {"PrefixRewrite": "/"}})
        ),
        "Routes[0].Destination.PrefixRewrite"
    );
    assert_eq!(
        route(json!({"Destination": {"RetryOn": ["sometimes"]}})),
        "Routes[0].Destination.RetryOn"
    );
    assert_eq!(
        route(json!({"Destination": {"RetryOnStatusCodes": [99]}})),
        "Routes[0].Destination.RetryOnStatusCodes"
    );
    assert_eq!(
        route(json!({"Destination": {"RequestTimeout": "later"}})),
        "Routes[0].Destination.RequestTimeout"
    );
    assert_eq!(
        route(json!({"Destination": {"Servce": "x"}})),
        "Routes[0].Destination.Servce"
    );
}

#[test]
fn unknown_kinds_and_missing_names_are_refused() {
    assert_eq!(
        parse(json!({"Kind": "service-mirror", "Name": "x"})).unwrap_err(),
        EntryError::UnknownKind("service-mirror".into())
    );
    assert_eq!(
        parse(json!({"Kind": "service-router"})).unwrap_err(),
        EntryError::Missing("Name")
    );
    assert_eq!(parse(json!([])).unwrap_err(), EntryError::NotAnObject);
    for k in kind::ALL {
        assert!(is_known_kind(k));
    }
}

#[test]
fn retry_conditions_reach_the_proxy_as_codes() {
    let d = service_router::RouteDestination {
        retry_on: vec!["gateway-error".into(), "reset".into()],
        retry_on_status_codes: vec![409],
        ..Default::default()
    };
    assert!(d.retries_connect_failure());
    assert_eq!(d.retried_status_codes(), vec![409, 502, 503, 504]);
}
