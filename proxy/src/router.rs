//! A compiled discovery chain: routes with their matchers, cumulative split
//! weights, targets with endpoint state and balancers, and the header
//! changes, all checked once per config version.
//!
//! [`Router::compile`] is also how [`crate::ProxyConfig::validate`] checks a
//! chain, so a config that validates always compiles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::Request;
use rand::Rng;

use crate::balance::{Balancer, EndpointState, EndpointTable};
use crate::chain::{Chain, HeaderChanges, OutlierDetection, Route, Target};
use crate::matching::{invalid, PathMatch, RequestMatcher};
use crate::ProxyError;

/// The sum of a route's split weights: 100% in hundredths of a percent.
pub(crate) const TOTAL_WEIGHT: u32 = 10_000;

/// One upstream's chain, ready for requests.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Vec<CompiledRoute>,
    targets: Vec<CompiledTarget>,
}

/// A route ready for requests.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    matcher: RequestMatcher,
    /// The splits with the running sum of their weights.
    splits: Vec<(u32, CompiledSplit)>,
    /// The path prefix to replace, and its replacement.
    rewrite: Option<(Rewrite, String)>,
    /// The route's own request timeout.
    pub(crate) timeout: Option<Duration>,
    /// How failed tries are retried.
    pub(crate) retry: RetryPolicy,
    /// Request header changes.
    pub(crate) request_headers: HeaderEdit,
    /// Response header changes.
    pub(crate) response_headers: HeaderEdit,
}

#[derive(Debug)]
enum Rewrite {
    Exact(String),
    Prefix(String),
}

/// What to retry and how often.
#[derive(Clone, Debug, Default)]
pub(crate) struct RetryPolicy {
    /// Tries after the first.
    pub(crate) num_retries: u32,
    /// Retry refused connections.
    pub(crate) on_connect_failure: bool,
    /// Retry these response codes.
    pub(crate) on_status_codes: Vec<u16>,
}

/// One weighted leg of a route.
#[derive(Debug)]
pub(crate) struct CompiledSplit {
    /// Index into the router's targets.
    pub(crate) target: usize,
    /// Request header changes of this leg.
    pub(crate) request_headers: HeaderEdit,
    /// Response header changes of this leg.
    pub(crate) response_headers: HeaderEdit,
}

/// A target ready for requests.
#[derive(Debug)]
pub(crate) struct CompiledTarget {
    /// The target's ID in the chain.
    pub(crate) id: String,
    /// The service its endpoints must prove to be.
    pub(crate) service: String,
    /// The subset name, empty for the whole service.
    pub(crate) subset: String,
    /// The endpoints with their live state.
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    /// The target's own connect timeout.
    pub(crate) connect_timeout: Option<Duration>,
    /// The target's own request timeout.
    pub(crate) request_timeout: Option<Duration>,
    /// Picks an endpoint.
    pub(crate) balancer: Balancer,
    /// Indexes of the failover targets, in order.
    failover: Vec<usize>,
    /// When its endpoints are ejected (the upstream's).
    pub(crate) outlier: OutlierDetection,
}

/// Header changes with names and values parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderEdit {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

// === impl Router ===

impl Router {
    /// Compiles `chain` (at `field` in the config), taking endpoint state
    /// from `table`.
    pub(crate) fn compile(
        chain: &Chain,
        field: &str,
        table: &EndpointTable,
    ) -> Result<Self, ProxyError> {
        if chain.routes.is_empty() {
            return Err(invalid(
                format!("{field}.Routes"),
                "at least one route is required",
            ));
        }
        let index: HashMap<&str, usize> = chain
            .targets
            .keys()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let lookup = |id: &str, at: String| {
            index
                .get(id)
                .copied()
                .ok_or_else(|| invalid(at, format!("names the unknown target {id:?}")))
        };
        let targets = chain
            .targets
            .iter()
            .map(|(id, target)| {
                let at = format!("{field}.Targets[{id:?}]");
                let failover = target
                    .failover
                    .iter()
                    .enumerate()
                    .map(|(i, other)| lookup(other, format!("{at}.Failover[{i}]")))
                    .collect::<Result<_, _>>()?;
                CompiledTarget::new(id, target, failover, table, &at)
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        let outlier = chain.outlier_detection.clone().unwrap_or_default();
        if outlier.base_ejection_time.is_zero() {
            return Err(invalid(
                format!("{field}.OutlierDetection.BaseEjectionTime"),
                "must be positive",
            ));
        }
        let targets = targets
            .into_iter()
            .map(|t| CompiledTarget {
                outlier: outlier.clone(),
                ..t
            })
            .collect();
        let routes = chain
            .routes
            .iter()
            .enumerate()
            .map(|(r, route)| {
                let at = format!("{field}.Routes[{r}]");
                let splits = route
                    .splits
                    .iter()
                    .enumerate()
                    .map(|(s, split)| {
                        let at = format!("{at}.Splits[{s}]");
                        Ok(CompiledSplit {
                            target: lookup(&split.target, format!("{at}.Target"))?,
                            request_headers: HeaderEdit::compile(
                                &split.request_headers,
                                &format!("{at}.RequestHeaders"),
                            )?,
                            response_headers: HeaderEdit::compile(
                                &split.response_headers,
                                &format!("{at}.ResponseHeaders"),
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>, ProxyError>>()?;
                CompiledRoute::new(route, splits, &at)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { routes, targets })
    }

    /// The first route `req` matches, with its index.
    pub(crate) fn route<B>(&self, req: &Request<B>) -> Option<(usize, &CompiledRoute)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.matcher.matches(req))
    }

    /// The target at `index`.
    pub(crate) fn target(&self, index: usize) -> &CompiledTarget {
        &self.targets[index]
    }

    /// Where requests for target `index` go: the target itself when it has
    /// an endpoint that is not ejected, else the first such failover
    /// target; when none has one, the first of them with any endpoint
    /// (ejected or not). `None`: no endpoint anywhere.
    pub(crate) fn resolve(&self, index: usize) -> Option<&CompiledTarget> {
        let first = &self.targets[index];
        let candidates =
            || std::iter::once(first).chain(first.failover.iter().map(|&i| &self.targets[i]));
        candidates()
            .find(|t| t.endpoints.iter().any(|e| !e.is_ejected()))
            .or_else(|| candidates().find(|t| !t.endpoints.is_empty()))
    }

    /// Every target.
    pub(crate) fn targets(&self) -> &[CompiledTarget] {
        &self.targets
    }
}

// === impl CompiledRoute ===

impl CompiledRoute {
    fn new(route: &Route, splits: Vec<CompiledSplit>, at: &str) -> Result<Self, ProxyError> {
        if splits.is_empty() {
            return Err(invalid(
                format!("{at}.Splits"),
                "at least one split is required",
            ));
        }
        let total: u64 = route.splits.iter().map(|s| u64::from(s.weight)).sum();
        if total != u64::from(TOTAL_WEIGHT) {
            return Err(invalid(
                format!("{at}.Splits"),
                format!("weights sum to {total}, not {TOTAL_WEIGHT} (100%)"),
            ));
        }
        let mut running = 0;
        let splits = route
            .splits
            .iter()
            .zip(splits)
            .map(|(split, compiled)| {
                running += split.weight;
                (running, compiled)
            })
            .collect();
        let matcher = RequestMatcher::compile(&route.r#match, &format!("{at}.Match"))?;
        if let Some(to) = &route.prefix_rewrite {
            if to.parse::<PathAndQuery>().is_err() || to.contains('?') {
                return Err(invalid(
                    format!("{at}.PrefixRewrite"),
                    format!("{to:?} is not a URL path"),
                ));
            }
        }
        let rewrite = route.prefix_rewrite.as_ref().and_then(|to| {
            let from = match matcher.path()? {
                PathMatch::Exact(path) => Rewrite::Exact(path.clone()),
                PathMatch::Prefix(prefix) => Rewrite::Prefix(prefix.clone()),
                PathMatch::Regex(_) => return None,
            };
            Some((from, to.clone()))
        });
        Ok(Self {
            matcher,
            splits,
            rewrite,
            timeout: route.request_timeout,
            retry: RetryPolicy {
                num_retries: route.num_retries,
                on_connect_failure: route.retry_on_connect_failure,
                on_status_codes: route.retry_on_status_codes.clone(),
            },
            request_headers: HeaderEdit::compile(
                &route.request_headers,
                &format!("{at}.RequestHeaders"),
            )?,
            response_headers: HeaderEdit::compile(
                &route.response_headers,
                &format!("{at}.ResponseHeaders"),
            )?,
        })
    }

    /// Picks a split by weight, afresh for each request.
    pub(crate) fn pick_split(&self) -> &CompiledSplit {
        let roll = rand::thread_rng().gen_range(0..TOTAL_WEIGHT);
        let i = self.splits.partition_point(|(upto, _)| *upto <= roll);
        // Weights sum to the total, so the roll always lands on a split.
        &self.splits[i.min(self.splits.len() - 1)].1
    }

    /// The path (and query) to forward: with `PrefixRewrite`, the matched
    /// prefix replaced. `None` when nothing changes.
    pub(crate) fn rewrite(&self, path: &str, query: Option<&str>) -> Option<String> {
        let (from, to) = self.rewrite.as_ref()?;
        let rest = match from {
            Rewrite::Exact(exact) if path == exact => "",
            Rewrite::Prefix(prefix) => path.strip_prefix(prefix.as_str())?,
            Rewrite::Exact(_) => return None,
        };
        let mut rewritten = format!("{to}{rest}");
        // `//x` would read as an authority: keep one slash.
        while rewritten.starts_with("//") {
            rewritten.remove(0);
        }
        if !rewritten.starts_with('/') {
            rewritten.insert(0, '/');
        }
        if let Some(query) = query {
            rewritten.push('?');
            rewritten.push_str(query);
        }
        Some(rewritten)
    }
}

// === impl CompiledTarget ===

impl CompiledTarget {
    fn new(
        id: &str,
        target: &Target,
        failover: Vec<usize>,
        table: &EndpointTable,
        at: &str,
    ) -> Result<Self, ProxyError> {
        if target.service.is_empty() {
            return Err(invalid(format!("{at}.Service"), "must not be empty"));
        }
        for (field, value) in [
            ("ConnectTimeout", target.connect_timeout),
            ("RequestTimeout", target.request_timeout),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(invalid(format!("{at}.{field}"), "must be positive"));
            }
        }
        Ok(Self {
            id: id.to_owned(),
            service: target.service.clone(),
            subset: target.subset.clone(),
            endpoints: target.endpoints.iter().map(|&a| table.get(a)).collect(),
            connect_timeout: target.connect_timeout,
            request_timeout: target.request_timeout,
            balancer: Balancer::new(&target.load_balancer, &target.endpoints),
            failover,
            outlier: OutlierDetection::default(),
        })
    }

    /// Picks an endpoint for `req`, avoiding `tried` when it can.
    pub(crate) fn pick<B>(
        &self,
        tried: &[SocketAddr],
        req: &Request<B>,
        peer: SocketAddr,
    ) -> Option<Arc<EndpointState>> {
        self.balancer.pick(&self.endpoints, tried, req, peer)
    }
}

// === impl HeaderEdit ===

impl HeaderEdit {
    /// Parses `changes` (at `field`).
    pub(crate) fn compile(changes: &HeaderChanges, field: &str) -> Result<Self, ProxyError> {
        let pairs = |map: &std::collections::BTreeMap<String, String>, kind: &str| {
            map.iter()
                .map(|(name, value)| {
                    let at = format!("{field}.{kind}[{name:?}]");
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid(&at, "not a valid header name"))?;
                    let value = HeaderValue::from_str(value)
                        .map_err(|_| invalid(&at, "not a valid header value"))?;
                    Ok((name, value))
                })
                .collect::<Result<Vec<_>, ProxyError>>()
        };
        let remove = changes
            .remove
            .iter()
            .enumerate()
            .map(|(i, name)| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(format!("{field}.Remove[{i}]"), "not a valid header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            add: pairs(&changes.add, "Add")?,
            set: pairs(&changes.set, "Set")?,
            remove,
        })
    }

    /// Applies the changes: remove, then set, then add.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{HttpMatch, Split};

    fn target(service: &str, failover: &[&str]) -> Target {
        Target {
            service: service.into(),
            endpoints: vec!["127.0.0.1:21000".parse().unwrap()],
            failover: failover.iter().map(|s| s.to_string()).collect(),
            ..Target::default()
        }
    }

    fn split(weight: u32, target: &str) -> Split {
        Split {
            weight,
            target: target.into(),
            ..Split::default()
        }
    }

    fn chain(routes: Vec<Route>) -> Chain {
        Chain {
            routes,
            targets: [
                ("a".to_string(), target("a", &["b"])),
                ("b".into(), target("b", &[])),
            ]
            .into_iter()
            .collect(),
            ..Chain::default()
        }
    }

    fn field_of(chain: &Chain) -> String {
        match Router::compile(chain, "C", &EndpointTable::default()) {
            Err(ProxyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn weights_targets_and_failovers_are_checked() {
        let route = |splits| Route {
            splits,
            ..Route::default()
        };
        assert_eq!(
            field_of(&chain(vec![route(vec![split(9000, "a"), split(999, "b")])])),
            "C.Routes[0].Splits"
        );
        assert_eq!(
            field_of(&chain(vec![route(vec![split(10_000, "c")])])),
            "C.Routes[0].Splits[0].Target"
        );
        let mut bad = chain(vec![route(vec![split(10_000, "a")])]);
        bad.targets.get_mut("b").unwrap().failover = vec!["nowhere".into()];
        assert_eq!(field_of(&bad), "C.Targets[\"b\"].Failover[0]");
        assert_eq!(field_of(&chain(vec![])), "C.Routes");
    }

    #[test]
    fn splits_follow_their_weights() {
        let c = chain(vec![Route {
            splits: vec![split(2500, "a"), split(7500, "b")],
            ..Route::default()
        }]);
        let router = Router::compile(&c, "C", &EndpointTable::default()).unwrap();
        let req = Request::new(());
        let (_, route) = router.route(&req).unwrap();
        let to_a = (0..10_000)
            .filter(|_| router.target(route.pick_split().target).id == "a")
            .count();
        assert!((2200..2800).contains(&to_a), "{to_a}");
    }

    #[test]
    fn prefix_rewrite_replaces_the_matched_part() {
        let route = |m: HttpMatch| {
            CompiledRoute::new(
                &Route {
                    r#match: m,
                    splits: vec![split(10_000, "a")],
                    prefix_rewrite: Some("/v2/".into()),
                    ..Route::default()
                },
                vec![CompiledSplit {
                    target: 0,
                    request_headers: HeaderEdit::default(),
                    response_headers: HeaderEdit::default(),
                }],
                "R",
            )
            .unwrap()
        };
        let prefix = route(HttpMatch {
            path_prefix: Some("/api/".into()),
            ..HttpMatch::default()
        });
        assert_eq!(
            prefix.rewrite("/api/users", Some("a=1")).as_deref(),
            Some("/v2/users?a=1")
        );
        let exact = route(HttpMatch {
            path_exact: Some("/old".into()),
            ..HttpMatch::default()
        });
        assert_eq!(exact.rewrite("/old", None).as_deref(), Some("/v2/"));
        assert_eq!(route(HttpMatch::default()).rewrite("/x", None), None);
    }

    #[test]
    fn failover_skips_targets_without_endpoints() {
        let mut c = chain(vec![Route {
            splits: vec![split(10_000, "a")],
            ..Route::default()
        }]);
        let router = Router::compile(&c, "C", &EndpointTable::default()).unwrap();
        assert_eq!(router.resolve(0).unwrap().id, "a");
        c.targets.get_mut("a").unwrap().endpoints.clear();
        let router = Router::compile(&c, "C", &EndpointTable::default()).unwrap();
        assert_eq!(router.resolve(0).unwrap().id, "b");
        c.targets.get_mut("b").unwrap().endpoints.clear();
        let router = Router::compile(&c, "C", &EndpointTable::default()).unwrap();
        assert!(router.resolve(0).is_none());
    }

    #[test]
    fn header_edits_remove_set_and_add() {
        let edit = HeaderEdit::compile(
            &HeaderChanges {
                add: [("x-add".to_string(), "2".to_string())].into(),
                set: [("x-set".to_string(), "new".to_string())].into(),
                remove: vec!["x-gone".into()],
            },
            "H",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-add", HeaderValue::from_static("1"));
        headers.insert("x-set", HeaderValue::from_static("old"));
        headers.insert("x-gone", HeaderValue::from_static("bye"));
        edit.apply(&mut headers);
        assert_eq!(headers.get_all("x-add").iter().count(), 2);
        assert_eq!(headers["x-set"], "new");
        assert!(!headers.contains_key("x-gone"));

        let bad = HeaderChanges {
            set: [("x".to_string(), "a\nb".to_string())].into(),
            ..HeaderChanges::default()
        };
        match HeaderEdit::compile(&bad, "H") {
            Err(ProxyError::InvalidConfig { field, .. }) => assert_eq!(field, "H.Set[\"x\"]"),
            other => panic!("{other:?}"),
        }
    }
}
