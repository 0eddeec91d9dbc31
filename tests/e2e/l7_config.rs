//! L7 config entries through the binary: `mesh config write` of defaults,
//! resolvers, splitters, routers and L7 intentions; the compiled discovery
//! chain; writes refused with Consul's reason (changing nothing); and the
//! chains pushed to running proxies' config streams.

use crate::proxy_config::ConfigStream;
use crate::support::{write_file, Agent};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;

const DEFAULTS: &str = r#"
Kind     = "service-defaults"
Name     = "billing-api"
Protocol = "http"
"#;

const RESOLVER: &str = r#"
Kind = "service-resolver"
Name = "billing-api"
Subsets = {
  v1 = {
    Filter = "Service.Meta.version == v1"
  }
  v2 = {
    Filter = "Service.Meta.version == v2"
  }
}
"#;

/// The issue's splitter: 10% to v2, 90% to v1.
const SPLITTER: &str = r#"
Kind = "service-splitter"
Name = "billing-api"
Splits = [
  { Weight = 10, ServiceSubset = "v2" },
  { Weight = 90, ServiceSubset = "v1" },
]
"#;

/// Runs `mesh config write` on `text` saved as `name`; returns the output.
fn config_write(a: &Agent, dir: &Path, name: &str, text: &str) -> std::process::Output {
    let file = write_file(dir, name, text);
    a.cli(&["config", "write", &file.display().to_string()])
}

/// `mesh config write` that must succeed.
fn config_write_ok(a: &Agent, dir: &Path, name: &str, text: &str) {
    let out = config_write(a, dir, name, text);
    assert!(
        out.status.success(),
        "config write {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mesh config write` that must fail; returns its error text.
fn config_write_refused(a: &Agent, dir: &Path, name: &str, text: &str) -> String {
    let out = config_write(a, dir, name, text);
    assert!(!out.status.success(), "config write {name} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Registers a billing-api instance of `version` whose sidecar listens on
/// `sidecar` (so its TCP check passes); the sidecar inherits the meta.
async fn billing_instance(a: &Agent, version: &str, sidecar: &TcpListener) {
    let port = sidecar.local_addr().unwrap().port();
    let body = json!({"Name": "billing-api", "ID": format!("billing-{version}"), "Port": 8080,
        "Meta": {"version": version}, "Connect": {"SidecarService": {"Port": port}}});
    a.put_ok("/v1/agent/service/register", &body.to_string())
        .await;
}

/// The `(target, weight)` legs of an upstream's catch-all route.
fn legs(upstream: &Value) -> BTreeMap<String, u64> {
    upstream["Chain"]["Routes"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["Splits"].as_array())
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["Target"].as_str().unwrap().to_string(),
                s["Weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The endpoints of one chain target.
fn endpoints(upstream: &Value, target: &str) -> Vec<String> {
    upstream["Chain"]["Targets"][target]["Endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_splitter_written_with_the_cli_reaches_the_chain_and_the_proxies() {
    let a = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // The resolver is fine on a tcp service; a splitter is not, and is
    // refused with Consul's reason, leaving nothing behind.
    config_write_ok(&a, dir, "resolver.hcl", RESOLVER);
    let err = config_write_refused(&a, dir, "splitter.hcl", SPLITTER);
    assert!(
        err.contains(
            "discovery chain \"billing-api\" uses a protocol \"tcp\" that does not permit advanced routing or splitting behavior"
        ),
        "{err}"
    );
    assert_eq!(
        a.get("/v1/config/service-splitter/billing-api")
            .await
            .status,
        404
    );
    assert_eq!(
        a.get("/v1/discovery-chain/billing-api").await.json()["Chain"]["StartNode"],
        "resolver:billing-api.default.dc1"
    );

    // With service-defaults saying http, the splitter is written.
    config_write_ok(&a, dir, "defaults.hcl", DEFAULTS);
    let out = a.cli_ok(&[
        "config",
        "write",
        &write_file(dir, "splitter.hcl", SPLITTER)
            .display()
            .to_string(),
    ]);
    assert_eq!(out, "Config entry written: service-splitter/billing-api\n");
    assert_eq!(
        a.cli_ok(&["config", "list", "-kind", "service-splitter"]),
        "billing-api\n"
    );

    // The compiled chain, in Consul's shape.
    let resp = a.get("/v1/discovery-chain/billing-api").await;
    assert_eq!(resp.status, 200);
    assert!(resp.index > 0);
    let chain = &resp.json()["Chain"];
    assert_eq!(chain["ServiceName"], "billing-api");
    assert_eq!(chain["Namespace"], "default");
    assert_eq!(chain["Datacenter"], "dc1");
    assert_eq!(chain["Protocol"], "http");
    assert_eq!(chain["StartNode"], "splitter:billing-api");
    let splitter = &chain["Nodes"]["splitter:billing-api"];
    assert_eq!(splitter["Type"], "splitter");
    assert_eq!(splitter["Splits"][0]["Weight"], 10);
    assert_eq!(
        splitter["Splits"][0]["NextNode"],
        "resolver:v2.billing-api.default.dc1"
    );
    assert_eq!(splitter["Splits"][1]["Weight"], 90);
    assert_eq!(
        splitter["Splits"][1]["NextNode"],
        "resolver:v1.billing-api.default.dc1"
    );
    let resolver = &chain["Nodes"]["resolver:v1.billing-api.default.dc1"];
    assert_eq!(resolver["Type"], "resolver");
    assert_eq!(
        resolver["Resolver"],
        json!({"ConnectTimeout": "5s", "Target": "v1.billing-api.default.dc1"})
    );
    let v2 = &chain["Targets"]["v2.billing-api.default.dc1"];
    assert_eq!(v2["Service"], "billing-api");
    assert_eq!(v2["ServiceSubset"], "v2");
    assert_eq!(v2["Subset"]["Filter"], "Service.Meta.version == v2");
    let trust_domain = a.get("/v1/agent/connect/ca/roots").await.json()["TrustDomain"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        v2["SNI"],
        format!("v2.billing-api.default.dc1.internal.{trust_domain}")
    );
    assert_eq!(chain["Targets"].as_object().unwrap().len(), 2);

    // Weights that do not add up are refused with the reason; the stored
    // splitter and the chain stay as they were.
    let before = a
        .get("/v1/config/service-splitter/billing-api")
        .await
        .json();
    let err = config_write_refused(
        &a,
        dir,
        "bad-splitter.hcl",
        r#"
        Kind = "service-splitter"
        Name = "billing-api"
        Splits = [
          { Weight = 60, ServiceSubset = "v1" },
          { Weight = 30, ServiceSubset = "v2" },
        ]
        "#,
    );
    assert!(
        err.contains("Splits: the sum of all split weights must be 100, not 90"),
        "{err}"
    );
    assert_eq!(
        a.get("/v1/config/service-splitter/billing-api")
            .await
            .json(),
        before
    );
    assert_eq!(
        a.get("/v1/discovery-chain/billing-api").await.index,
        resp.index
    );
    // So is a split to a subset the resolver does not define.
    let err = config_write_refused(
        &a,
        dir,
        "v3.hcl",
        "Kind = \"service-splitter\"\nName = \"billing-api\"\nSplits = [{ Weight = 100, ServiceSubset = \"v3\" }]\n",
    );
    assert!(
        err.contains("service \"billing-api\" does not have a subset named \"v3\""),
        "{err}"
    );
    // And deleting the resolver the splitter needs.
    let out = a.cli(&[
        "config",
        "delete",
        "-kind",
        "service-resolver",
        "-name",
        "billing-api",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not have a subset named"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        a.get("/v1/config/service-resolver/billing-api")
            .await
            .status,
        200
    );

    // Two instances, v1 and v2, whose sidecars inherit their meta.
    let v1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v2 = TcpListener::bind("127.0.0.1:0").unwrap();
    billing_instance(&a, "v1", &v1).await;
    billing_instance(&a, "v2", &v2).await;
    let v1_addr = v1.local_addr().unwrap().to_string();
    let v2_addr = v2.local_addr().unwrap().to_string();

    // A proxy for web with billing-api as an upstream gets the chain.
    let mut web = ConfigStream::open(
        &a,
        "/v1/agent/connect/proxy-config?service=web&upstream=billing-api%3A127.0.0.1%3A9191",
    )
    .await;
    let split = web
        .until("both subsets' endpoints", |c| {
            let u = &c["Upstreams"][0];
            !endpoints(u, "v1.billing-api.default.dc1").is_empty()
                && !endpoints(u, "v2.billing-api.default.dc1").is_empty()
        })
        .await;
    let upstream = &split["Upstreams"][0];
    assert_eq!(upstream["Destination"], "billing-api");
    assert_eq!(upstream["Protocol"], "http");
    assert_eq!(
        legs(upstream),
        BTreeMap::from([
            ("v1.billing-api.default.dc1".to_string(), 9000),
            ("v2.billing-api.default.dc1".to_string(), 1000),
        ])
    );
    assert_eq!(
        endpoints(upstream, "v1.billing-api.default.dc1"),
        vec![v1_addr.clone()]
    );
    assert_eq!(
        endpoints(upstream, "v2.billing-api.default.dc1"),
        vec![v2_addr.clone()]
    );
    assert_eq!(
        upstream["Chain"]["Targets"]["v2.billing-api.default.dc1"]["Subset"],
        "v2"
    );
    assert_eq!(
        upstream["Chain"]["Targets"]["v2.billing-api.default.dc1"]["Service"],
        "billing-api"
    );

    // A changed splitter arrives as a new version, without a restart.
    config_write_ok(
        &a,
        dir,
        "splitter.hcl",
        "Kind = \"service-splitter\"\nName = \"billing-api\"\nSplits = [\n  { Weight = 50, ServiceSubset = \"v2\" },\n  { Weight = 50, ServiceSubset = \"v1\" },\n]\n",
    );
    let even = web
        .until("the 50/50 split", |c| {
            legs(&c["Upstreams"][0]).values().all(|w| *w == 5000)
        })
        .await;
    assert!(even["Version"].as_u64() > split["Version"].as_u64());
    assert!(
        even["Upstreams"][0]["Chain"]
            .get("OutlierDetection")
            .is_none(),
        "Envoy's defaults apply until web's service-defaults say otherwise"
    );

    // web's own service-defaults tune passive health checks of its upstreams.
    config_write_ok(
        &a,
        dir,
        "web-defaults.hcl",
        "Kind = \"service-defaults\"\nName = \"web\"\nUpstreamConfig {\n  Defaults {\n    PassiveHealthCheck {\n      MaxFailures = 2\n      BaseEjectionTime = \"1m\"\n    }\n  }\n}\n",
    );
    let tuned = web
        .until("the outlier detection settings", |c| {
            c["Upstreams"][0]["Chain"].get("OutlierDetection").is_some()
        })
        .await;
    assert_eq!(
        tuned["Upstreams"][0]["Chain"]["OutlierDetection"],
        serde_json::json!({"MaxFailures": 2, "BaseEjectionTime": "1m"})
    );

    // The billing sidecar speaks http, and L7 intentions reach it.
    let mut billing = ConfigStream::open(
        &a,
        "/v1/agent/connect/proxy-config/billing-v1-sidecar-proxy?bind_address=127.0.0.1",
    )
    .await;
    assert_eq!(billing.next().await["PublicListener"]["Protocol"], "http");
    config_write_ok(
        &a,
        dir,
        "intentions.hcl",
        r#"
        Kind = "service-intentions"
        Name = "billing-api"
        Sources = [
          {
            Name = "web"
            Permissions = [
              {
                Action = "allow"
                HTTP {
                  PathPrefix = "/invoices"
                  Methods    = ["GET"]
                }
              },
              {
                Action = "deny"
                HTTP {
                  PathPrefix = "/"
                }
              },
            ]
          },
        ]
        "#,
    );
    let l7 = billing
        .until("the L7 intention", |c| {
            c["Intentions"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    // (The proxy contract spells the match `Http`.)
    assert_eq!(
        l7["Intentions"][0],
        json!({"Source": "web", "Allow": false, "Precedence": 9, "Permissions": [
            {"Allow": true, "Http": {"PathPrefix": "/invoices", "Methods": ["GET"]}},
            {"Allow": false, "Http": {"PathPrefix": "/"}}]})
    );
    let listed = a
        .get("/v1/connect/intentions/exact?source=web&destination=billing-api")
        .await
        .json();
    assert_eq!(listed["Action"], "");
    assert_eq!(listed["Permissions"][0]["Action"], "allow");
}

#[tokio::test]
async fn routers_and_l7_intentions_need_an_http_service() {
    let a = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let router = r#"
        Kind = "service-router"
        Name = "api"
        Routes = [
          {
            Match { HTTP { PathPrefix = "/admin" } }
            Destination { Service = "admin" }
          },
        ]
    "#;
    let err = config_write_refused(&a, dir, "router.hcl", router);
    assert!(err.contains("does not permit advanced routing"), "{err}");

    // L7 permissions through the exact endpoint: refused on tcp...
    let l7 = r#"{"Permissions": [{"Action": "deny", "HTTP": {"PathExact": "/secret"}}]}"#;
    let r = a
        .put(
            "/v1/connect/intentions/exact?source=web&destination=api",
            l7,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text
            .contains("incompatible with L7 intentions permissions"),
        "{}",
        r.text
    );
    let r = a
        .put(
            "/v1/connect/intentions/exact?source=web&destination=api",
            r#"{"Action": "allow", "Permissions": [{"Action": "deny", "HTTP": {"PathExact": "/x"}}]}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("Action must be omitted"), "{}", r.text);
    // ...and the legacy API never takes them.
    let r = a
        .req(
            "POST",
            "/v1/connect/intentions",
            Some(
                r#"{"SourceName": "web", "DestinationName": "api", "Action": "allow",
                "Permissions": [{"Action": "deny", "HTTP": {"PathExact": "/x"}}]}"#,
            ),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(a.get("/v1/connect/intentions").await.json(), json!([]));

    // With api on http (proxy-defaults here), both are accepted.
    config_write_ok(
        &a,
        dir,
        "proxy-defaults.hcl",
        "Kind = \"proxy-defaults\"\nName = \"global\"\nConfig {\n  protocol = \"http\"\n}\n",
    );
    config_write_ok(&a, dir, "router.hcl", router);
    a.put_ok(
        "/v1/connect/intentions/exact?source=web&destination=api",
        l7,
    )
    .await;
    let resp = a.get("/v1/discovery-chain/api").await;
    let chain = resp.json();
    assert_eq!(chain["Chain"]["StartNode"], "router:api");

    // A blocking read of the chain wakes on a config write.
    let blocked = a
        .client
        .get(format!(
            "{}/v1/discovery-chain/api?index={}&wait=30s",
            a.base, resp.index
        ))
        .send();
    let mut blocked =
        tokio::spawn(async move { blocked.await.unwrap().json::<Value>().await.unwrap() });
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut blocked).await;
    assert!(early.is_err(), "the read returned before any change");
    config_write_ok(
        &a,
        dir,
        "resolver.hcl",
        "Kind = \"service-resolver\"\nName = \"api\"\nConnectTimeout = \"7s\"\n",
    );
    let woken = tokio::time::timeout(std::time::Duration::from_secs(20), blocked)
        .await
        .expect("the blocking read returned")
        .unwrap();
    assert_eq!(
        woken["Chain"]["Nodes"]["resolver:api.default.dc1"]["Resolver"]["ConnectTimeout"],
        "7s"
    );
    assert_eq!(
        chain["Chain"]["Nodes"]["router:api"]["Routes"][1]["Definition"]["Match"]["HTTP"]
            ["PathPrefix"],
        "/"
    );
    // Now going back to tcp would break both: refused.
    let err = config_write_refused(
        &a,
        dir,
        "api-tcp.hcl",
        "Kind = \"service-defaults\"\nName = \"api\"\nProtocol = \"tcp\"\n",
    );
    assert!(err.contains("api"), "{err}");
    let check = a
        .req(
            "POST",
            "/v1/agent/connect/authorize",
            Some(r#"{"Target": "api", "ClientCertURI": "spiffe://1111.consul/ns/default/dc/dc1/svc/web"}"#),
        )
        .await
        .json();
    assert_eq!(check["Authorized"], false);
    assert!(check["Reason"].as_str().unwrap().contains("L7"), "{check}");

    // A POST with overrides compiles differently.
    let tcp = a
        .req(
            "POST",
            "/v1/discovery-chain/api",
            Some(r#"{"OverrideProtocol": "tcp"}"#),
        )
        .await
        .json();
    assert_eq!(tcp["Chain"]["Protocol"], "tcp");
    assert_eq!(tcp["Chain"]["StartNode"], "resolver:api.default.dc1");
    assert!(tcp["Chain"]["CustomizationHash"].as_str().is_some());
}
