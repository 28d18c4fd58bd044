//! The result of a run: a JSON document (`--json`) and a human summary.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::metrics::{LatencySummary, Machine};

/// One measured phase of a scenario (a burst series, a rate step, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// Messages per second the tool tried to send (open loop), if paced.
    pub offered_rate: Option<f64>,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub send_failed: u64,
    /// Sends that started later than scheduled because the tool's
    /// in-flight limit was reached (the offered rate was not achieved).
    pub late_sends: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub acked_per_s: f64,
    /// Send (before the request) to receive, over every delivery.
    pub latency: LatencySummary,
    /// Send to ack (the mutation's response).
    pub ack_latency: LatencySummary,
    /// CPU of the tool and of the server(s), percent of one core.
    pub client_cpu_pct: f64,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// Anything scenario specific.
    pub extra: BTreeMap<String, Value>,
}

/// A target of issue 6, checked against a measured value.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub goal: String,
    pub value: f64,
    pub unit: String,
    pub met: bool,
}

impl TargetCheck {
    pub fn at_least(name: &str, value: f64, min: f64, unit: &str) -> Self {
        TargetCheck {
            name: name.into(),
            goal: format!(">= {min} {unit}"),
            value,
            unit: unit.into(),
            met: value >= min,
        }
    }

    pub fn at_most(name: &str, value: f64, max: f64, unit: &str) -> Self {
        TargetCheck {
            name: name.into(),
            goal: format!("<= {max} {unit}"),
            value,
            unit: unit.into(),
            met: value <= max,
        }
    }
}

/// Whole-run consistency: every acked message reached every subscriber.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Consistency {
    pub sent: u64,
    pub acked: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub out_of_order: u64,
    pub send_errors: BTreeMap<String, u64>,
    pub receive_errors: BTreeMap<String, u64>,
    pub first_send_error: Option<String>,
    pub first_receive_error: Option<String>,
    /// True when nothing failed and deliveries match exactly.
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub tool_version: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_at: u64,
    pub machine: Machine,
    pub load_before: String,
    pub load_after: String,
    pub database: Option<String>,
    pub nodes: usize,
    pub params: Value,
    pub connections: u64,
    pub phases: Vec<Phase>,
    pub consistency: Consistency,
    pub targets: Vec<TargetCheck>,
    pub notes: Vec<String>,
    /// With `--compare-ceiling`: Clacks' figures over the ceiling's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ratios: BTreeMap<String, f64>,
    /// With `--balancer` and several nodes: what each node's NATS
    /// connection received and published during the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nats_traffic: Vec<crate::balancer::NatsTraffic>,
    /// With `--compare-ceiling`: the same scenario against the ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Box<Report>>,
}

impl Report {
    pub fn new(scenario: &str, params: Value) -> Report {
        Report {
            scenario: scenario.into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            machine: Machine::read(),
            load_before: crate::metrics::loadavg(),
            load_after: String::new(),
            database: None,
            nodes: 1,
            params,
            connections: 0,
            phases: Vec::new(),
            consistency: Consistency::default(),
            targets: Vec::new(),
            notes: Vec::new(),
            ratios: BTreeMap::new(),
            nats_traffic: Vec::new(),
            ceiling: None,
        }
    }

    /// The human summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        out.push_str(&format!(
            "== clacks-bench {} ==\nmachine: {} cpus, {} ({} MiB), kernel {}; load {} -> {}\n",
            self.scenario,
            m.cpus,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel,
            self.load_before,
            self.load_after
        ));
        if let Some(db) = &self.database {
            out.push_str(&format!("database: {db}, nodes: {}\n", self.nodes));
        }
        out.push_str(&format!(
            "params: {}\nconnections: {}\n",
            self.params, self.connections
        ));
        for p in &self.phases {
            out.push_str(&format!("-- {}", p.name));
            if let Some(r) = p.offered_rate {
                out.push_str(&format!(" (offered {r:.0} msg/s)"));
            }
            out.push_str(&format!(
                ": {:.2} s, sent {} acked {} failed {} late {}\n",
                p.duration_s, p.sent, p.acked, p.send_failed, p.late_sends
            ));
            if p.expected_deliveries > 0 || p.delivered > 0 {
                out.push_str(&format!(
                    "   delivered {}/{} = {:.0} events/s; latency {}\n",
                    p.delivered,
                    p.expected_deliveries,
                    p.delivered_per_s,
                    p.latency.line()
                ));
            }
            if p.acked > 0 {
                out.push_str(&format!(
                    "   acked {:.0} msg/s; ack {}\n",
                    p.acked_per_s,
                    p.ack_latency.line()
                ));
            }
            out.push_str(&format!("   cpu: tool {:.0}%", p.client_cpu_pct));
            if let Some(s) = p.server_cpu_pct {
                out.push_str(&format!(", server {s:.0}%"));
            }
            if let Some(r) = p.server_rss_kib {
                out.push_str(&format!("; server RSS {:.1} MiB", r as f64 / 1024.0));
            }
            out.push('\n');
            for (k, v) in &p.extra {
                out.push_str(&format!("   {k}: {v}\n"));
            }
        }
        let c = &self.consistency;
        out.push_str(&format!(
            "consistency: {} (sent {}, acked {}, delivered {}/{}, out of order {})\n",
            if c.ok { "OK" } else { "PROBLEMS" },
            c.sent,
            c.acked,
            c.delivered,
            c.expected_deliveries,
            c.out_of_order
        ));
        if !c.send_errors.is_empty() {
            out.push_str(&format!("   send errors: {:?}\n", c.send_errors));
        }
        if let Some(e) = &c.first_send_error {
            out.push_str(&format!("   first send error: {e}\n"));
        }
        if !c.receive_errors.is_empty() {
            out.push_str(&format!("   receive errors: {:?}\n", c.receive_errors));
        }
        if let Some(e) = &c.first_receive_error {
            out.push_str(&format!("   first receive error: {e}\n"));
        }
        for t in &self.targets {
            out.push_str(&format!(
                "target {}: {:.2} {} (goal {}) {}\n",
                t.name,
                t.value,
                t.unit,
                t.goal,
                if t.met { "MET" } else { "NOT MET" }
            ));
        }
        for t in &self.nats_traffic {
            let kinds: Vec<String> = t
                .received_by_subject
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            out.push_str(&format!(
                "nats {}: received {} ({}), published {}\n",
                t.name,
                t.received,
                kinds.join(", "),
                t.published
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if let Some(c) = &self.ceiling {
            out.push_str("\n== the same run against the ceiling ==\n");
            out.push_str(&c.human());
            out.push_str("== Clacks / ceiling ==\n");
            for (k, v) in &self.ratios {
                out.push_str(&format!("ratio {k}: {v:.3}x\n"));
            }
        }
        out
    }
}
