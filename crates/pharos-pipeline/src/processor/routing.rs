//! The `routing` processor: sends the items that match a route to another tenant or through
//! another named pipeline of the same signal. Routes are tried in order; an item goes with the
//! first that matches; items no route matches stay where they are.
//!
//! ```yaml
//! processors:
//!   routing:
//!     routes:
//!       - resource: {service.name: '^payments-.*'}   # regexes on resource attributes (all must match)
//!         pipeline: traces/pci                        # the rest of this pipeline is skipped
//!       - attributes: {tenant.id: '^acme$'}           # regexes on the item's own attributes
//!         tenant: acme                                # stored as tenant acme; goes on through this pipeline
//! ```
//! Regexes are unanchored (use `^...$` for an exact match) and test the attribute's value as
//! text. A route names exactly one of `tenant` and `pipeline`. For traces, match on `resource`
//! to keep each service's spans together (the tail sampler decides per tenant and trace).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use pharos_core::{Signal, Tenant};
use regex::Regex;
use serde::Deserialize;

use super::{Batch, ConfigError, Context, Data, Processor, compile_regex, otlp, parse_config};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    routes: Vec<RouteConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    #[serde(default)]
    resource: BTreeMap<String, String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    tenant: Option<String>,
    pipeline: Option<String>,
}

enum Target {
    Tenant(Tenant),
    Pipeline(String),
}

struct Route {
    resource: Vec<(String, Regex)>,
    attributes: Vec<(String, Regex)>,
    target: Target,
}

fn matches(conditions: &[(String, Regex)], attrs: &[KeyValue]) -> bool {
    conditions.iter().all(|(key, re)| otlp::get(attrs, key).is_some_and(|v| re.is_match(&otlp::to_text(v))))
}

impl Route {
    fn matches(&self, resource: &[KeyValue], attrs: &[KeyValue]) -> bool {
        matches(&self.resource, resource) && matches(&self.attributes, attrs)
    }
}

pub fn build(config: &serde_yaml::Value, signal: Signal) -> Result<Box<dyn Processor>, ConfigError> {
    let config: Config = parse_config(config)?;
    let mut routes = Vec::new();
    for (i, r) in config.routes.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let compile = |section: &str, map: BTreeMap<String, String>| {
            map.into_iter()
                .map(|(k, pattern)| {
                    let re = compile_regex(&format!("{path}.{section}.{k}"), &pattern)?;
                    Ok((k, re))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let resource = compile("resource", r.resource)?;
        let attributes = compile("attributes", r.attributes)?;
        if resource.is_empty() && attributes.is_empty() {
            return Err(ConfigError::new(&path, "a route needs `resource` or `attributes` conditions"));
        }
        let target = match (r.tenant, r.pipeline) {
            (Some(t), None) => Target::Tenant(Tenant::parse(&t).map_err(|e| {
                ConfigError::new(format!("{path}.tenant"), format!("invalid tenant {t:?}: {e}"))
            })?),
            (None, Some(p)) => {
                let prefix = p.split_once('/').map(|(s, _)| s).unwrap_or(&p);
                if prefix != signal.as_str() {
                    return Err(ConfigError::new(
                        format!("{path}.pipeline"),
                        format!("`{p}` is not a {} pipeline", signal.as_str()),
                    ));
                }
                Target::Pipeline(p)
            }
            _ => return Err(ConfigError::new(&path, "a route names exactly one of `tenant` and `pipeline`")),
        };
        routes.push(Route { resource, attributes, target });
    }
    if routes.is_empty() {
        return Err(ConfigError::new("routes", "at least one route is needed"));
    }
    Ok(Box::new(Routing { routes }))
}

struct Routing {
    routes: Vec<Route>,
}

impl Routing {
    /// The index of the first route an item matches.
    fn route_of(&self, resource: &[KeyValue], attrs: &[KeyValue]) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(resource, attrs))
    }
}

/// Keeps in `data` only the items whose route is `want`.
fn keep_route(routing: &Routing, data: &mut Data, want: Option<usize>) {
    match data {
        Data::Traces(r) => {
            otlp::retain_spans(r, |o, s| routing.route_of(o.resource, &s.attributes) == want);
        }
        Data::Logs(r) => {
            otlp::retain_logs(r, |o, l| routing.route_of(o.resource, &l.attributes) == want);
        }
        Data::Metrics(r) => {
            otlp::retain_points(r, |o, _, p| routing.route_of(o.resource, p.attributes()) == want);
        }
    }
}

impl Processor for Routing {
    fn process(&mut self, batch: Batch, ctx: &mut Context, out: &mut Vec<Batch>) {
        // Which routes occur at all (most batches: none, and nothing is copied).
        let mut used = vec![false; self.routes.len()];
        let mut unrouted = false;
        let mut mark = |r: Option<usize>| match r {
            Some(i) => used[i] = true,
            None => unrouted = true,
        };
        match &batch.data {
            Data::Traces(r) => {
                for rs in &r.resource_spans {
                    let res = otlp::resource_attributes(&rs.resource);
                    rs.scope_spans
                        .iter()
                        .flat_map(|s| &s.spans)
                        .for_each(|s| mark(self.route_of(res, &s.attributes)));
                }
            }
            Data::Logs(r) => {
                for rl in &r.resource_logs {
                    let res = otlp::resource_attributes(&rl.resource);
                    rl.scope_logs
                        .iter()
                        .flat_map(|s| &s.log_records)
                        .for_each(|l| mark(self.route_of(res, &l.attributes)));
                }
            }
            Data::Metrics(r) => {
                let mut copy = r.clone();
                otlp::retain_points(&mut copy, |o, _, p| {
                    mark(self.route_of(o.resource, p.attributes()));
                    true
                });
            }
        }
        if used.iter().all(|u| !u) {
            out.push(batch);
            return;
        }
        for (i, route) in self.routes.iter().enumerate().filter(|(i, _)| used[*i]) {
            let mut routed = batch.clone();
            keep_route(self, &mut routed.data, Some(i));
            ctx.count("routed", routed.data.items());
            match &route.target {
                Target::Tenant(t) => routed.tenant = t.clone(),
                Target::Pipeline(p) => routed.route = Some(p.clone()),
            }
            out.push(routed);
        }
        if unrouted {
            let mut rest = batch;
            keep_route(self, &mut rest.data, None);
            out.push(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    fn service(name: &str, spans: usize) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![otlp::key_value("service.name", otlp::string_value(name))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans).map(|i| Span { name: format!("op{i}"), ..Default::default() }).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn routing(yaml: &str) -> Result<Box<dyn Processor>, ConfigError> {
        build(&serde_yaml::from_str(yaml).expect("yaml"), Signal::Traces)
    }

    #[test]
    fn routing_splits_by_resource_into_pipeline_tenant_and_rest() {
        let mut p = routing(
            "routes:\n  - resource: {service.name: '^payments'}\n    pipeline: traces/pci\n  - resource: {service.name: '^acme-'}\n    tenant: acme\n",
        )
        .expect("valid");
        let data = Data::Traces(ExportTraceServiceRequest {
            resource_spans: vec![service("payments-api", 2), service("acme-web", 3), service("frontend", 4)],
        });
        let mut out = Vec::new();
        let mut ctx = Context::at(0);
        p.process(Batch::new(Tenant::default_tenant(), 9, data), &mut ctx, &mut out);
        assert_eq!(out.len(), 3);
        let pci = out.iter().find(|b| b.route.as_deref() == Some("traces/pci")).expect("pci batch");
        assert_eq!(pci.data.items(), 2);
        let acme = out.iter().find(|b| b.tenant.as_str() == "acme").expect("acme batch");
        assert_eq!((acme.data.items(), acme.route.is_none(), acme.offset), (3, true, 9));
        let rest =
            out.iter().find(|b| b.tenant == Tenant::default_tenant() && b.route.is_none()).expect("rest");
        assert_eq!(rest.data.items(), 4);
        assert_eq!(ctx.counted_for("routed"), 5);
    }

    #[test]
    fn routing_without_a_match_passes_the_batch_unchanged() {
        let mut p = routing("routes:\n  - resource: {service.name: x}\n    tenant: a\n").expect("valid");
        let batch = Batch::new(
            Tenant::default_tenant(),
            1,
            Data::Traces(ExportTraceServiceRequest { resource_spans: vec![service("y", 1)] }),
        );
        let mut out = Vec::new();
        p.process(batch.clone(), &mut Context::at(0), &mut out);
        assert_eq!(out, vec![batch]);
    }

    #[test]
    fn routing_config_errors_name_their_keys() {
        let err = |yaml: &str| routing(yaml).err().map(|e| e.path).unwrap_or_default();
        assert_eq!(err("routes:\n  - resource: {a: '('}\n    tenant: a\n"), "routes[0].resource.a");
        assert_eq!(
            err("routes:\n  - resource: {a: b}\n    tenant: a\n    pipeline: traces/x\n"),
            "routes[0]"
        );
        assert_eq!(err("routes:\n  - resource: {a: b}\n    pipeline: logs/x\n"), "routes[0].pipeline");
        assert_eq!(err("routes:\n  - resource: {a: b}\n    tenant: 'bad/tenant'\n"), "routes[0].tenant");
        assert_eq!(err("routes:\n  - tenant: a\n    oops: 1\n"), "routes[0].oops");
    }
}
